#!/usr/bin/env bash
# Crash soak for the file snapshot store: SIGKILLs a process that writes snapshots in a loop KILLS times at
# random moments, and after each kill checks that every snapshot file left behind loads and verifies
# (none partial) and that a restart removes the temporary files. The test suite does 50 kills; this does
# more. SEED makes a run repeatable (printed at the end of every run).
#
#   benchmarks/snapshot_soak.sh [KILLS (default 1000)] [BUILD_DIR (default build)]
#   SEED=123 TMPDIR=/mnt/disk benchmarks/snapshot_soak.sh 5000 build
set -euo pipefail
kills="${1:-1000}"
build="${2:-build}"
bin="$(find "$build" -type f -name persistence_tests -perm -u+x | head -n1)"
if [[ -z "$bin" ]]; then
  echo "persistence_tests not found under $build; build it first (cmake --build $build --target persistence_tests)" >&2
  exit 2
fi
export BRT_CRASH_ITERATIONS="$kills"
if [[ -n "${SEED:-}" ]]; then export BRT_CRASH_SEED="$SEED"; fi
exec "$bin" --gtest_filter='SnapshotCrashTest.*' --gtest_brief=1
