#!/usr/bin/env bash
# Installs every Debian package brt-server needs to build, test and benchmark (Debian 12 "bookworm").
# Idempotent: when every package is already installed it does nothing (no apt-get update), so repeated
# runs are fast. Run as root (or with sudo available). `install-deps.sh --list` prints the list and exits.
# The packages to build and run the server are in deploy/packages/*.txt (the Docker images read them too).
set -euo pipefail

PKG_DIR="$(dirname "$0")/packages"
PACKAGES=()
for list in build torch-build runtime torch-runtime; do
  # One or more names a line; '#' starts a comment.
  # shellcheck disable=SC2207  # word splitting is the point: names never contain spaces.
  PACKAGES+=($(sed -e 's/#.*//' "$PKG_DIR/$list.txt"))
done
PACKAGES+=(
  # Build tools for the fuzz and sanitizer builds (tests/checks/run.sh): clang, its ASan/UBSan/libFuzzer
  # runtimes (only recommended by clang-14, and recommends are not installed here) and Ninja.
  clang-14 libclang-rt-14-dev ninja-build
  # C++ unit tests.
  libgtest-dev libgmock-dev
  # Python side: model, reference scorer, integration tests, benchmarks.
  python3-torch python3-sentencepiece python3-grpcio python3-protobuf python3-pytest python3-numpy
  python3-matplotlib sentencepiece
  # brt plot draws its PNGs with gnuplot.
  gnuplot-nox
  # Corpus and services used by tests and later issues.
  bible-kjv bible-kjv-text redis-server prometheus
  # The affinity proxy of the replica tests and of deploy/kubernetes; linting deploy/ YAML.
  nginx yamllint
  # Training corpus: Jane Austen's novels (the package stores them as R data, read with R).
  r-base-core r-cran-janeaustenr
  # Headless browser for the web page test.
  chromium
)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

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
