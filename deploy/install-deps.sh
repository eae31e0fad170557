#!/usr/bin/env bash
# Installs every Debian package brt-server needs to build, test and benchmark (Debian 12 "bookworm").
# Idempotent: when every package is already installed it does nothing (no apt-get update), so repeated
# runs are fast. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  # Build tools.
  cmake g++ make pkg-config clang-14
  # C++ dependencies.
  libtorch-dev libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev libabsl-dev
  libsentencepiece-dev prometheus-cpp-dev libgtest-dev libgmock-dev nlohmann-json3-dev libssl-dev
  libhiredis-dev
  # Fast BLAS for LibTorch on CPU (switches the libblas.so.3 alternative; ~30x over reference BLAS).
  libopenblas0-openmp
  # Python side: model, reference scorer, integration tests, benchmarks.
  python3-torch python3-sentencepiece python3-grpcio python3-protobuf python3-pytest python3-numpy
  python3-matplotlib sentencepiece
  # brt plot draws its PNGs with gnuplot.
  gnuplot-nox
  # Corpus and services used by tests and later issues.
  bible-kjv bible-kjv-text redis-server prometheus
  # Training corpus: Jane Austen's novels (the package stores them as R data, read with R).
  r-base-core r-cran-janeaustenr
  # HTTP (OpenAI-compatible) front end.
  libcpp-httplib-dev
  # Headless browser for the web page test.
  chromium
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${PACKAGES[@]}"
