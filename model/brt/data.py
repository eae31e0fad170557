"""Corpus access: documents of a split, tokenized as BOS + tokens + EOS (cached beside the split)."""
from __future__ import annotations

import json
import os
from typing import List, Tuple

import numpy as np

from .tokenizer import Tokenizer


def load_split_texts(data_dir: str, split: str) -> List[Tuple[str, str]]:
    path = os.path.join(data_dir, f"{split}.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: run model/build_corpus.py first")
    with open(path, encoding="utf-8") as f:
        return [(d["name"], d["text"]) for d in map(json.loads, f)]


def load_split_tokens(data_dir: str, split: str, tok: Tokenizer) -> List[np.ndarray]:
    cache = os.path.join(data_dir, f"{split}.{tok.sha256[:12]}.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        return [z[k] for k in sorted(z.files, key=int)]
    docs = [np.array([tok.bos_id] + tok.encode(text) + [tok.eos_id], dtype=np.int64)
            for _, text in load_split_texts(data_dir, split)]
    np.savez(cache, **{str(i): d for i, d in enumerate(docs)})
    return docs
