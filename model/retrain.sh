#!/usr/bin/env bash
# Retrains the shipped default model from scratch (about 70 minutes on 2 CPU cores):
# corpus -> tokenizer -> training (resumable: rerun to continue) -> export -> report -> tiny test export.
#   model/retrain.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-65}
/usr/bin/python3 model/build_corpus.py --out model/data
model/train_tokenizer.sh model/data model/artifacts/tokenizer 4096
/usr/bin/python3 model/train.py --run model/runs/default --minutes "$minutes" --total-steps 4500 --threads 2 \
  --export model/artifacts/brt.pt
/usr/bin/python3 model/report.py --model model/artifacts/brt.pt --out model/report.json > model/report.md
/usr/bin/python3 model/make_tiny.py
