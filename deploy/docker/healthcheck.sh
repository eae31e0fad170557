#!/bin/sh
# The images' HEALTHCHECK: grpc.health.v1 through the brt CLI, at $BRT_SERVER (default 127.0.0.1:50051).
# `--status_only` asks only the health service, which needs no API key even when the server has
# --api_keys_file. Arguments go to `brt health` (e.g. --tls_root_cert=PEM --tls_server_name=NAME when the
# server speaks TLS only).
exec "${BRT_CLI:-/opt/brt/build/bin/brt}" health --status_only --timeout=4 "$@" 2>&1
