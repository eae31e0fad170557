#!/usr/bin/env python3
"""Writes a tiny, randomly initialised BRT export for fast tests (tests/data/tiny/).

It uses the shipped tokenizer so the server's tokenizer check passes. Parameters that initialise to
constants are randomised too (relative-position bias N(0,1), per-head scales, norm weights, the gate bias), so
that a wrong relative-position bucket, mask or scale changes the server's numbers. Regenerate with:
  /usr/bin/python3 model/make_tiny.py
"""
import argparse
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brt.config import BRTConfig  # noqa: E402
from brt.export import export  # noqa: E402
from brt.model import BlockRecurrentTransformer  # noqa: E402
from brt.tokenizer import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default="model/artifacts/tokenizer.model")
    ap.add_argument("--out", default="tests/data/tiny")
    args = ap.parse_args()
    torch.manual_seed(1234)
    tok = Tokenizer(args.tokenizer)
    cfg = BRTConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, d_ff=64, window=8,
                    n_state=4, recurrent_layers=[1], dropout=0.0, attn_scale_init=4.0)
    model = BlockRecurrentTransformer(cfg)
    with torch.no_grad():
        for layer in model.layers:
            layer.rel_bias.normal_(0.0, 1.0)
            layer.alpha.uniform_(2.0, 6.0)
            layer.norm1.weight.normal_(1.0, 0.1)
            layer.norm2.weight.normal_(1.0, 0.1)
            if layer.rec_index >= 0:
                layer.alpha2.uniform_(2.0, 6.0)
                layer.s_alpha.uniform_(2.0, 6.0)
                layer.s_alpha2.uniform_(2.0, 6.0)
                layer.state_norm.weight.normal_(1.0, 0.1)
                layer.gate_bias.normal_(0.0, 1.0)
        model.final_norm.weight.normal_(1.0, 0.1)
    os.makedirs(args.out, exist_ok=True)
    shutil.copyfile(args.tokenizer, os.path.join(args.out, "tokenizer.model"))
    meta = export(model, cfg, tok.sha256, os.path.join(args.out, "brt.pt"), name="tiny-random")
    print(f"wrote {args.out}/brt.pt fingerprint {meta['fingerprint'][:16]}")


if __name__ == "__main__":
    main()
