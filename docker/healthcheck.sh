#!/usr/bin/env bash
# Container health check: GET /health on mailetd's HTTP admin listener, healthy on a 200.
# Plain bash (/dev/tcp), so the runtime image needs no curl. The address is
# MAILETD_HEALTH_ADDR (default 127.0.0.1:8025, the default of [http] bind in mailetd.toml).
set -uo pipefail

addr=${MAILETD_HEALTH_ADDR:-127.0.0.1:8025}
host=${addr%:*}
port=${addr##*:}

if ! exec 3<>"/dev/tcp/$host/$port"; then
  echo "unhealthy: nothing listens on $addr" >&2
  exit 1
fi
printf 'GET /health HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$addr" >&3
IFS= read -r -t 4 status <&3 || status=""
exec 3>&-
status=${status%$'\r'}
case "$status" in
  "HTTP/"*" 200"*) exit 0 ;;
  *)
    echo "unhealthy: GET http://$addr/health answered '${status:-nothing}'" >&2
    exit 1
    ;;
esac
