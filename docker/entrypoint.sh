#!/usr/bin/env bash
# Container entrypoint of mailetd.
#
#   (no argument)          mailetd check, then exec mailetd serve
#   --generate-keystore    as James: create a self-signed key and certificate when the PEM
#                          files named in smtpserver.xml <tls> are missing
#                          (sets MAILETD_GENERATE_CERTIFICATE=true); then as above
#   check|serve|outbox|repo|replay ...
#                          runs that mailetd subcommand instead (e.g. `docker run … outbox list`)
#
# The configuration is checked before serving so that a broken file stops the container at
# once with file:line:col, rather than after it has bound port 25.
set -euo pipefail

MAILETD=${MAILETD_BIN:-mailetd}

serve_args=()
for arg in "$@"; do
  case "$arg" in
    --generate-keystore) export MAILETD_GENERATE_CERTIFICATE=true ;;
    *) serve_args+=("$arg") ;;
  esac
done

if [ ${#serve_args[@]} -gt 0 ]; then
  case "${serve_args[0]}" in
    check | serve | outbox | repo | replay | help | --help | -h | --version | -V)
      exec "$MAILETD" "${serve_args[@]}"
      ;;
    *)
      echo "mailetd-entrypoint: unknown argument '${serve_args[0]}'" >&2
      echo "usage: [--generate-keystore] | check | serve | outbox … | repo … | replay …" >&2
      exit 64
      ;;
  esac
fi

rc=0
"$MAILETD" check || rc=$?
case $rc in
  0) ;;
  126)
    # execve refuses a binary whose file capabilities are not all in the bounding set
    echo "mailetd-entrypoint: cannot execute $MAILETD: it carries the file capability cap_net_bind_service (to bind port 25 as a non-root user) and the container runs without NET_BIND_SERVICE; do not drop that capability" >&2
    exit 126
    ;;
  *)
    echo "mailetd-entrypoint: the configuration in ${MAILETD_CONF:-conf} does not load; not starting" >&2
    exit 78
    ;;
esac
exec "$MAILETD" serve
