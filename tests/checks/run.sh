#!/usr/bin/env bash
# Static and dynamic checks, run by deploy/test.sh after the unit tests (about 2-3 minutes on 2 cores from a
# clean clone). Three parts, each timed:
#   1. thread safety: clang -Wthread-safety -Werror=thread-safety (syntax only: the analysis is done by the
#      front end) over every .cc under server/, the gRPC and HTTP layers included, except
#      server/model/model_runner*.cc and server/model/tensor_io.cc (the files that parse LibTorch's full
#      headers: they hold no locks and have no lock annotations, and parsing LibTorch would cost more than
#      the rest together). Uses the main build's generated headers
#      (build/gen, build/client/gen), so run deploy/build.sh first.
#   2. ASan + UBSan unit tests: a clang build in build-sanitize/ (-DBRT_WITH_TORCH=OFF -DBRT_WITH_GRPC=OFF
#      -DBRT_SANITIZE=ON: -fsanitize=address,undefined -fno-sanitize-recover=undefined, LeakSanitizer on) of the
#      unit tests that need neither LibTorch nor gRPC (tokenizer, sampler + text stream, engine with the fake
#      backend, batch planner, session table, checkpoint log, API keys, metrics, persistence incl. Redis), run
#      with ctest. -O0 and a unity build (CMAKE_UNITY_BUILD: a name clash between two .cc files of one target
#      breaks this build only) keep the build time down; the tokenizer shim stays uninstrumented like the
#      libsentencepiece behind it. This build also has -Werror=thread-safety, so the lock annotations of the
#      test helpers (tests/cpp/testing, tests/cpp/persistence) are checked as well. Not run here:
#      SnapshotCrashTest (it SIGKILLs a writer after 2-82 ms, too soon for an ASan child on a loaded machine to
#      write anything; it runs in the main build's ctest).
#   3. libFuzzer: snapshot_decode_fuzzer and tokenizer_fuzzer (tests/fuzz), built in the same folder, each for
#      BRT_FUZZ_SECONDS (default 20) side by side, from the seed corpora in tests/fuzz/corpus/ (new inputs go
#      to a temporary folder; the repository's corpus is not changed). A finding prints the input in base64.
#      tests/fuzz/README.md has the command for a long run.
# Environment: BRT_CHECKS (default "tsa asan fuzz": the parts to run), BRT_FUZZ_SECONDS, BRT_CHECKS_JOBS
# (default 2), BRT_MAIN_BUILD (default build), BRT_SANITIZE_BUILD (default build-sanitize).
set -euo pipefail
cd "$(dirname "$0")/../.."

PARTS="${BRT_CHECKS:-tsa asan fuzz}"
FUZZ_SECONDS="${BRT_FUZZ_SECONDS:-20}"
JOBS="${BRT_CHECKS_JOBS:-2}"
MAIN_BUILD="${BRT_MAIN_BUILD:-build}"
SAN_BUILD="${BRT_SANITIZE_BUILD:-build-sanitize}"
CLANGXX="${BRT_CLANGXX:-clang++-14}"
SUMMARY=()
START_ALL=$(date +%s)

wants() { [[ " $PARTS " == *" $1 "* ]]; }
elapsed() { echo $(( $(date +%s) - $1 )); }

# ---- 1. thread safety -------------------------------------------------------------------------------------
thread_safety() {
  local t0; t0=$(date +%s)
  echo "== checks 1/3: clang -Wthread-safety -Werror=thread-safety over server/ (all but model_runner*.cc and tensor_io.cc)"
  for gen in "$MAIN_BUILD/gen/brt/v1/brt.pb.h" "$MAIN_BUILD/client/gen/grpc/health/v1/health.pb.h"; do
    [ -f "$gen" ] || { echo "missing $gen: run deploy/build.sh first" >&2; exit 1; }
  done
  local files; files=$(find server -name '*.cc' ! -path 'server/model/model_runner*.cc' \
    ! -path 'server/model/tensor_io.cc' | sort)
  local n; n=$(echo "$files" | wc -l)
  local log; log=$(mktemp)
  # shellcheck disable=SC2046
  if ! echo "$files" | xargs -P"$JOBS" -n1 "$CLANGXX" -std=c++17 -fsyntax-only -Wthread-safety \
        -Werror=thread-safety -I. -I"$MAIN_BUILD/gen" -I"$MAIN_BUILD/client/gen" \
        $(pkg-config --cflags cpp-httplib grpc++) >"$log" 2>&1; then
    cat "$log"
    echo "== thread-safety analysis FAILED (see above)" >&2
    exit 1
  fi
  [ -s "$log" ] && cat "$log"
  rm -f "$log"
  SUMMARY+=("thread safety ($n files): $(elapsed "$t0") s")
  echo "   ok: $n files, $(elapsed "$t0") s"
}

# ---- 2 and 3 share one clang build ---------------------------------------------------------------------------
configure_sanitize_build() {
  CXX="$CLANGXX" cmake -S . -B "$SAN_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -gline-tables-only" -DCMAKE_CXX_FLAGS=-Werror=thread-safety \
    -DCMAKE_UNITY_BUILD=ON \
    -DBRT_WITH_TORCH=OFF -DBRT_WITH_GRPC=OFF -DBRT_SANITIZE=ON -DBRT_BUILD_FUZZERS=ON >/dev/null
}

sanitized_tests() {
  local t0; t0=$(date +%s)
  echo "== checks 2/3: unit tests under ASan + UBSan ($SAN_BUILD/)"
  configure_sanitize_build
  local log; log=$(mktemp)
  if ! cmake --build "$SAN_BUILD" -j"$JOBS" >"$log" 2>&1; then
    tail -100 "$log"
    echo "== sanitizer build FAILED" >&2
    exit 1
  fi
  grep -E 'warning:' "$log" || true
  local built; built=$(elapsed "$t0")
  if ! ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_init_order=1 \
       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
       ctest --test-dir "$SAN_BUILD" -j"$JOBS" -LE fuzz -E '^SnapshotCrashTest\.' --output-on-failure \
       >"$log" 2>&1; then
    grep -vE '^ *(Start +[0-9]+:|[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed)' "$log"
    echo "== unit tests under ASan + UBSan FAILED" >&2
    exit 1
  fi
  grep -E 'tests passed' "$log" | sed 's/^/   /'
  rm -f "$log"
  SUMMARY+=("ASan+UBSan: build $built s, tests $(( $(elapsed "$t0") - built )) s")
  echo "   ok: build $built s, tests $(( $(elapsed "$t0") - built )) s"
}

# Starts one fuzzer in the background: fuzz NAME BINARY SEED_DIR EXTRA_FLAGS...
FUZZ_PIDS=(); FUZZ_NAMES=(); FUZZ_BINS=()
fuzz() {
  local name=$1 bin=$2 seeds=$3; shift 3
  mkdir -p "$FUZZ_DIR/$name/new" "$FUZZ_DIR/$name/artifacts"
  "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$FUZZ_DIR/$name/artifacts/" "$@" "$FUZZ_DIR/$name/new" "$seeds" \
    >"$FUZZ_DIR/$name/log" 2>&1 &
  FUZZ_PIDS+=($!); FUZZ_NAMES+=("$name"); FUZZ_BINS+=("$bin")
}

fuzzers() {
  local t0; t0=$(date +%s)
  echo "== checks 3/3: libFuzzer, ${FUZZ_SECONDS} s each (snapshot decoder, tokenizer + incremental tokenizer)"
  configure_sanitize_build
  cmake --build "$SAN_BUILD" -j"$JOBS" --target snapshot_decode_fuzzer tokenizer_fuzzer >/dev/null
  FUZZ_DIR=$(mktemp -d)
  fuzz snapshot "$SAN_BUILD/bin/snapshot_decode_fuzzer" tests/fuzz/corpus/snapshot -malloc_limit_mb=64
  fuzz tokenizer "$SAN_BUILD/bin/tokenizer_fuzzer" tests/fuzz/corpus/tokenizer -malloc_limit_mb=64
  local failed=0 i
  for i in "${!FUZZ_PIDS[@]}"; do
    local name=${FUZZ_NAMES[$i]} log="$FUZZ_DIR/${FUZZ_NAMES[$i]}/log"
    if wait "${FUZZ_PIDS[$i]}"; then
      local runs seeds final
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
      seeds=$(find "tests/fuzz/corpus/$name" -type f | wc -l)
      final=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed -E 's/^#[0-9]+[[:space:]]+DONE[[:space:]]+//')
      echo "   $name: ok, $runs runs ($seeds seeds; at the end: $final)"
    else
      failed=1
      echo "   $name: FAILED; the end of its log:"
      grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|^	NEW_FUNC' "$log" | tail -60
      local a
      for a in "$FUZZ_DIR/$name/artifacts/"*; do
        [ -f "$a" ] || continue
        echo "   input $(basename "$a") (base64; decode it to FILE and rerun: ${FUZZ_BINS[$i]} FILE):"
        base64 "$a"
      done
    fi
  done
  rm -rf "$FUZZ_DIR"
  [ "$failed" -eq 0 ] || { echo "== fuzzing FAILED" >&2; exit 1; }
  SUMMARY+=("fuzzing: $(elapsed "$t0") s")
  echo "   ok: $(elapsed "$t0") s"
}

wants tsa && thread_safety
wants asan && sanitized_tests
wants fuzz && fuzzers
echo "== checks passed in $(elapsed "$START_ALL") s: $(IFS=';'; echo "${SUMMARY[*]}")"
