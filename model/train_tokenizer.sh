#!/usr/bin/env bash
# Trains the lossless SentencePiece tokenizer on the training split (see model/README.md).
# Usage: model/train_tokenizer.sh [DATA_DIR] [OUT_PREFIX] [VOCAB]
set -euo pipefail
data=${1:-model/data}
prefix=${2:-model/artifacts/tokenizer}
vocab=${3:-4096}
mkdir -p "$(dirname "$prefix")"
spm_train --input="$data/tokenizer_sample.txt" --model_prefix="$prefix" --vocab_size="$vocab" \
  --model_type=bpe --character_coverage=1.0 \
  --normalization_rule_name=identity --remove_extra_whitespaces=false --add_dummy_prefix=false \
  --byte_fallback=true --allow_whitespace_only_pieces=true --split_digits=true \
  --user_defined_symbols=$'\n' \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=3 \
  --input_sentence_size=2000000 --shuffle_input_sentence=true --max_sentence_length=8192 \
  --num_threads=1 --random_seed=1234 --minloglevel=1
rm -f "$prefix.vocab"
