#!/usr/bin/env bash
# The prepared GPU check (about 10 minutes): run it on a machine with an NVIDIA GPU and PyTorch with CUDA,
# from the repository root, e.g. through the device tool:  bash benchmarks/gpu/run.sh
# 1. bench_cuda.py: CUDA correctness (decode vs blocks, bf16 vs fp32) and score/decode throughput at
#    1..256 sessions, on the same TorchScript methods brt-server calls.
# 2. Tries the C++ core without gRPC (cmake -DBRT_WITH_GRPC=OFF against PyTorch's bundled LibTorch) and, if it
#    builds, brt-engine-bench on cuda:0. This needs Abseil, prometheus-cpp, hiredis, OpenSSL and SentencePiece
#    headers on that machine; when they are missing it says so and skips, and the Python figures stand alone.
# Results go to $OUT (the device tool's folder) or /tmp/brt-gpu.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/brt-gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
echo "== bench_cuda.py"
timeout 420 "$PY" benchmarks/gpu/bench_cuda.py --model model/artifacts/brt.pt --text model/data/test.jsonl \
  --out "$OUT/cuda.json" ${QUICK:+--quick} 2>&1 | tee "$OUT/bench_cuda.log"
echo "== C++ core without gRPC"
PREFIX="$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)"
if timeout 60 cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DBRT_WITH_GRPC=OFF \
    -DCMAKE_PREFIX_PATH="$PREFIX" > "$OUT/cmake.log" 2>&1; then
  if timeout 300 cmake --build build-gpu --target brt-engine-bench > "$OUT/build.log" 2>&1; then
    "$PY" -c 'import json;d=[json.loads(l) for l in open("model/data/test.jsonl")][0];open("/tmp/eze.txt","w").write(d["text"])'
    timeout 120 build-gpu/bin/brt-engine-bench --text=/tmp/eze.txt --device=cuda:0 --threads=4 \
      --shim=build-gpu/lib/libbrt_spm_shim.so --score_sessions=1,8,64 --generate_sessions=1,32,128 \
      | tee "$OUT/engine_bench_cuda.json"
  else
    echo "C++ build failed (see build.log)"; tail -5 "$OUT/build.log"
  fi
else
  echo "C++ configure failed: this machine lacks a dependency of the core (see cmake.log)"; tail -5 "$OUT/cmake.log"
fi
