#!/bin/sh
# The images' HEALTHCHECK: grpc.health.v1 through the brt CLI, at $BRT_SERVER (default 127.0.0.1:50051).
# `brt health` then asks GetServerInfo, which needs an API key when the server has --api_keys_file; a
# refusal of that second call still means the health check itself said SERVING. Set BRT_API_KEY in the
# container to have the whole command pass instead. Arguments go to `brt health` (e.g. --tls_root_cert=PEM
# --tls_server_name=NAME when the server speaks TLS only).
out="$("${BRT_CLI:-/opt/brt/build/bin/brt}" health --timeout=4 "$@" 2>&1)" && exit 0
case "$out" in
  *"UNAUTHENTICATED: GetServerInfo"*) exit 0 ;;
esac
echo "$out"
exit 1
