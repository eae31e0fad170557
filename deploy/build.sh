#!/usr/bin/env bash
# Configures (Release) into build/ and builds everything: build/bin/brt-server, build/lib/libbrt_spm_shim.so
# and the unit tests (run them with `ctest --test-dir build`).
# Extra arguments go to the CMake configure step, e.g. deploy/build.sh -DBRT_BUILD_TESTS=OFF.
# BRT_BUILD_JOBS overrides the parallelism (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"${BRT_BUILD_JOBS:-$(nproc)}"
