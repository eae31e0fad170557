#!/bin/sh
# PID 1 of the brt-proxy container: runs nginx and keeps its upstream list equal to the brt-server
# replicas that are ready (their DNS records exist), by stable StatefulSet name
# (brt-server-0.brt-server-headless, ...), reloading nginx when that set or an address changes.
# Hashing over names means a session keeps its replica while the set stays the same, and about 1/N of
# the sessions move when it changes (they restore from the shared store on the replica they move to).
# `proxy.sh upstream` prints the upstream list once and exits (tests/deploy uses it).
set -eu
STATEFULSET="${BRT_STATEFULSET:-brt-server}"
SERVICE="${BRT_HEADLESS_SERVICE:-brt-server-headless}"
MAX_REPLICAS="${BRT_MAX_REPLICAS:-16}"
PORT="${BRT_GRPC_PORT:-50051}"
EVERY_S="${BRT_RESYNC_SECONDS:-5}"
CONF="${BRT_PROXY_CONF:-/etc/brt-proxy/conf/nginx.conf}"
RUN_DIR="${BRT_PROXY_RUN_DIR:-/tmp/brt-proxy}"

upstream() {
  i=0
  n=0
  while [ "$i" -lt "$MAX_REPLICAS" ]; do
    host="$STATEFULSET-$i.$SERVICE"
    addr="$(getent hosts "$host" | head -n 1 | cut -d ' ' -f 1)"
    if [ -n "$addr" ]; then
      # The address is there so that a restarted replica's new address changes the file: nginx
      # resolves names only when it (re)loads.
      echo "server $host:$PORT max_fails=1 fail_timeout=5s;  # $addr"
      n=$((n + 1))
    fi
    i=$((i + 1))
  done
  # nginx refuses an empty upstream; with no replica ready, calls fail (UNAVAILABLE) until one is.
  if [ "$n" -eq 0 ]; then
    echo "server 127.0.0.1:9 down;  # no replica is ready"
  fi
}

if [ "${1:-}" = upstream ]; then
  upstream
  exit 0
fi

mkdir -p "$RUN_DIR"
upstream > "$RUN_DIR/upstream.conf"
nginx -e stderr -c "$CONF" -g 'daemon off;' &
nginx_pid=$!
# SIGTERM: nginx stops accepting and lets open calls finish (worker_shutdown_timeout bounds that).
trap 'nginx -e stderr -c "$CONF" -s quit; wait "$nginx_pid"; exit 0' TERM INT
while kill -0 "$nginx_pid" 2>/dev/null; do
  sleep "$EVERY_S" &
  wait $! || true
  upstream > "$RUN_DIR/upstream.conf.new"
  if cmp -s "$RUN_DIR/upstream.conf.new" "$RUN_DIR/upstream.conf"; then
    continue
  fi
  mv "$RUN_DIR/upstream.conf.new" "$RUN_DIR/upstream.conf"
  echo "proxy.sh: replicas changed, reloading nginx with:"
  cat "$RUN_DIR/upstream.conf"
  nginx -e stderr -c "$CONF" -s reload || echo "proxy.sh: reload failed; nginx keeps the old list" >&2
done
wait "$nginx_pid"
