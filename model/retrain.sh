#!/usr/bin/env bash
# Retrains the shipped default model from scratch, with exactly the shipped model's data, tokenizer, config,
# steps and seed: corpus -> tokenizer -> training -> export of the best validation weights -> report -> tiny
# test export. About 100 minutes on one CPU thread (the shipped run: see model/README.md).
#   model/retrain.sh
# Training is resumable and resumes exactly (rerun this script after an interruption); to start over, remove
# model/runs/default. The run's log (model/runs/default/train_log.jsonl) starts with a header holding every
# argument and the config. The shipped run used these same training arguments (its tokenizer was byte-identical,
# read from another path, and it also passed --minutes as a safety limit, which it did not reach).
set -euo pipefail
cd "$(dirname "$0")/.."
/usr/bin/python3 model/build_corpus.py --out model/data
model/train_tokenizer.sh model/data model/artifacts/tokenizer 4096
/usr/bin/python3 model/train.py --run model/runs/default --data model/data \
  --tokenizer model/artifacts/tokenizer.model --batch 4 --segment-blocks 8 --weights austen=2 \
  --lr 2e-3 --weight-decay 0.01 --warmup 200 --total-steps 2800 --gate-init-low 1 --gate-init-high 5 \
  --eval-every 200 --eval-tokens 4096 --threads 1 --device cpu --seed 1234 \
  --export model/artifacts/brt.pt
/usr/bin/python3 model/report.py --model model/artifacts/brt.pt --run model/runs/default --out model/report.json \
  > model/report.md
/usr/bin/python3 model/make_tiny.py
