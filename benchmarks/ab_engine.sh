#!/usr/bin/env bash
# Two builds of brt-engine-bench side by side: the same flags, the builds alternating, --rounds times,
# after waiting for a quiet machine (1-minute load under 0.6). Prints one JSON line per run, labelled.
#
#   bash benchmarks/ab_engine.sh A_BUILD_DIR B_BUILD_DIR [ROUNDS] -- [brt-engine-bench flags...]
#
# e.g. the sampler change of 2026-12-03 (A: a worktree of the commit before it, built with
# `cmake --build build --target brt-engine-bench brt_spm_shim`):
#   bash benchmarks/ab_engine.sh /tmp/old/build build 3 -- --score_sessions= --generate_sessions=32 \
#     --generate_tokens=256 --generate_temperature=0.8 --generate_top_p=0.95
set -euo pipefail
a="$1"; b="$2"; shift 2
rounds=3
if [[ $# -gt 0 && "$1" != "--" ]]; then rounds="$1"; shift; fi
[[ $# -gt 0 && "$1" == "--" ]] && shift
while [ "$(cut -d' ' -f1 /proc/loadavg | awk '{print ($1 < 0.6)}')" != 1 ]; do sleep 10; done
echo "# load before: $(cat /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
  for which in a b; do
    dir=$a; [[ $which == b ]] && dir=$b
    line=$("$dir/bin/brt-engine-bench" --shim="$dir/lib/libbrt_spm_shim.so" "$@" 2>/dev/null | tail -1)
    echo "{\"round\": $r, \"build\": \"$which\", \"dir\": \"$dir\", \"result\": $line}"
  done
done
echo "# load after: $(cat /proc/loadavg)"
