#!/usr/bin/env bash
# Runs the whole test suite from a clean clone: installs the Debian packages (skipped when present),
# builds the corpus used by tests (a few seconds, from Debian's bible-kjv and Python sources), builds the
# server and its unit tests, then runs
#   1. the C++ unit tests (ctest), then tests/checks/run.sh (about 3 minutes): clang's thread-safety analysis
#      with -Werror, the LibTorch- and gRPC-free unit tests under ASan + UBSan, and the snapshot decoder and
#      tokenizer fuzzers for 20 s each,
#   2. the model and tokenizer tests (pytest, tests/model),
#   3. the deployment configs and a real Prometheus scrape (pytest, tests/metrics), and the Docker and
#      Kubernetes files linted and validated offline (pytest, tests/deploy),
#   4. the end-to-end tests against the real brt-server binary on loopback (pytest, tests/integration),
#      including the official openai npm SDK and the web page in headless Chromium (tests/node, whose npm
#      packages `npm ci` installs from the lock file).
# Extra arguments go to the final pytest run (e.g. -k generation).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
[ -f model/data/test.jsonl ] || /usr/bin/python3 model/build_corpus.py --out model/data
bash deploy/build.sh
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
echo "== C++ unit tests"
ctest --test-dir build --output-on-failure -j2
bash tests/checks/run.sh
echo "== Python tests (model, tokenizer, end-to-end)"
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/model tests/metrics tests/deploy tests/integration "$@"
