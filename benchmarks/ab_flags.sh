#!/usr/bin/env bash
# One build of brt-engine-bench under two sets of flags, side by side: the sets alternating, ROUNDS times,
# after waiting for a quiet machine (1-minute load under 0.6). Prints one JSON line per run, labelled a/b;
# benchmarks/ab_summary.py turns them into per-round ratios and their median.
#
#   bash benchmarks/ab_flags.sh ROUNDS "FLAGS_A" "FLAGS_B" -- [common brt-engine-bench flags...]
#
# e.g. the frozen module (2026-12-03, seventh pass):
#   bash benchmarks/ab_flags.sh 5 "--freeze_model=false" "--freeze_model=true" -- --text=FILE \
#     --score_sessions=1,8 --score_bytes=20000 --generate_sessions=1,32 --generate_tokens=256
set -euo pipefail
rounds=$1; flags_a=$2; flags_b=$3; shift 3
[[ $# -gt 0 && "$1" == "--" ]] && shift
bin=${BRT_BUILD_DIR:-build}/bin/brt-engine-bench
while [ "$(cut -d' ' -f1 /proc/loadavg | awk '{print ($1 < 0.6)}')" != 1 ]; do sleep 10; done
echo "# load before: $(cat /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
  for which in a b; do
    flags=$flags_a; [[ $which == b ]] && flags=$flags_b
    # shellcheck disable=SC2086  # each set is a list of flags
    line=$("$bin" $flags "$@" 2>/dev/null | tail -1)
    echo "{\"round\": $r, \"build\": \"$which\", \"flags\": \"$flags\", \"result\": $line}"
  done
done
echo "# load after: $(cat /proc/loadavg)"
