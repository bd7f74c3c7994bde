# syntax=docker/dockerfile:1
#
# mailetd container image.
#
#   docker build -t mailetd .
#   docker run -p 25:25 -v $PWD/examples/standalone-email/conf:/opt/mailetd/conf:ro mailetd
#
# Layout inside the image (James's working-directory layout, so `file://conf/…` and
# `file://var/…` in James files mean the same thing):
#   /opt/mailetd/conf   configuration (volume; mount yours read-only)
#   /opt/mailetd/var    spool, outbox, repositories (volume; must survive restarts)
# SMTP listens on port 25 as an unprivileged user: the binary carries the
# cap_net_bind_service file capability, nothing runs as root.
# Not built or run in mailetd's CI (no Docker engine there): see docs/quickstart.md.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY conf ./conf
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mailetd \
    && install -m 0755 target/release/mailetd /usr/local/bin/mailetd

FROM debian:bookworm-slim
# ca-certificates: HTTPS to esn-sabre / the OpenPaaS API; libcap2-bin only for setcap, then removed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/mailetd /usr/local/bin/mailetd
COPY docker/entrypoint.sh /usr/local/bin/mailetd-entrypoint
COPY docker/healthcheck.sh /usr/local/bin/mailetd-healthcheck
COPY conf /opt/mailetd/conf
RUN setcap cap_net_bind_service=+ep /usr/local/bin/mailetd \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y \
    && groupadd --system --gid 10025 mailetd \
    && useradd --system --uid 10025 --gid mailetd --home-dir /opt/mailetd --shell /usr/sbin/nologin mailetd \
    && mkdir -p /opt/mailetd/var \
    && chown -R mailetd:mailetd /opt/mailetd/var \
    && chmod 0755 /usr/local/bin/mailetd-entrypoint /usr/local/bin/mailetd-healthcheck

USER mailetd
WORKDIR /opt/mailetd
ENV MAILETD_CONF=/opt/mailetd/conf \
    MAILETD_DATA_DIR=/opt/mailetd/var \
    MAILETD_SMTP_BIND=0.0.0.0:25 \
    MAILETD_LOG=info
VOLUME ["/opt/mailetd/conf", "/opt/mailetd/var"]
EXPOSE 25
# GET /health on the admin HTTP listener ([http] bind, default 127.0.0.1:8025, which is the
# container's own loopback: the check runs inside the container).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/mailetd-healthcheck"]
# SIGTERM lets open SMTP sessions and running mails finish (shutdown_timeout_secs, 30 s by
# default); give docker stop at least that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mailetd-entrypoint"]
CMD []
