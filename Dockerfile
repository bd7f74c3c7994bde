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
# Built and run in CI by scripts/test-image (podman; see docs/quickstart.md).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY conf ./conf
# The registry and target caches outlive the build: a rebuild after a source change only
# recompiles the mailetd crate. The binary is stripped (symbols are a third of its size).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mailetd \
    && install -s -m 0755 target/release/mailetd /usr/local/bin/mailetd

# The runtime's files, gathered into /rootfs on bookworm-slim: the binary with its
# cap_net_bind_service file capability; bash and env (the entrypoint's and health check's
# `#!/usr/bin/env bash`) and the glibc libraries they and mailetd link; the CA bundle
# (HTTPS to esn-sabre / the OpenPaaS API); the users. Nothing else: no apt, no coreutils,
# no package database (bookworm-slim alone is ~75 MB). The final stage is that tree alone.
FROM debian:bookworm-slim AS rootfs
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/mailetd /rootfs/usr/local/bin/mailetd
COPY docker/entrypoint.sh /rootfs/usr/local/bin/mailetd-entrypoint
COPY docker/healthcheck.sh /rootfs/usr/local/bin/mailetd-healthcheck
COPY conf /rootfs/opt/mailetd/conf
RUN set -eu; cd /rootfs \
    && mkdir -p usr/bin usr/sbin usr/lib usr/lib64 etc/ssl/certs tmp opt/mailetd/var \
    && ln -s usr/bin bin && ln -s usr/sbin sbin && ln -s usr/lib lib && ln -s usr/lib64 lib64 \
    && cp /bin/bash /usr/bin/env usr/bin/ && ln -s bash usr/bin/sh \
    && for lib in $(ldd /bin/bash /usr/bin/env usr/local/bin/mailetd | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do \
         cp -L --parents "$lib" /rootfs; done \
    && cp /etc/ld.so.cache etc/ \
    && cp /etc/ssl/certs/ca-certificates.crt etc/ssl/certs/ \
    && printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nmailetd:x:10025:10025:mailetd:/opt/mailetd:/usr/sbin/nologin\n' >etc/passwd \
    && printf 'root:x:0:\nmailetd:x:10025:\n' >etc/group \
    && chmod 1777 tmp \
    && chown -R 10025:10025 opt/mailetd/var \
    && chmod 0755 usr/local/bin/mailetd-entrypoint usr/local/bin/mailetd-healthcheck \
    && setcap cap_net_bind_service=+ep /rootfs/usr/local/bin/mailetd

FROM scratch
COPY --from=rootfs /rootfs /
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
