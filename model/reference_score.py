#!/usr/bin/env python3
"""Scores a text file with the eager reference model and prints JSON.

  /usr/bin/python3 model/reference_score.py --model model/artifacts/brt.pt FILE [--tokens] [--reset-every N]
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brt.reference import load_eager, score_tokens  # noqa: E402
from brt.tokenizer import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--model", default="model/artifacts/brt.pt")
    ap.add_argument("--tokenizer", default=None, help="default: tokenizer.model beside the model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reset-every", type=int, default=None, help="reset the state every N blocks")
    ap.add_argument("--tokens", action="store_true", help="include per-token ids and NLLs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_eager(args.model)
    tok = Tokenizer(args.tokenizer or os.path.join(os.path.dirname(args.model), "tokenizer.model"))
    data = open(args.file, "rb").read()
    ids = [tok.bos_id] + tok.encode_bytes(data)
    t0 = time.time()
    nll = score_tokens(model, ids, args.reset_every)
    dt = time.time() - t0
    total = sum(nll)
    n = len(nll)
    out = {"tokens": n, "bytes": len(data), "total_nll": total, "mean_nll": total / n,
           "perplexity": math.exp(total / n), "bits_per_token": total / n / math.log(2),
           "bits_per_byte": total / math.log(2) / len(data), "seconds": dt, "tokens_per_s": n / dt}
    if args.tokens:
        out["ids"] = ids[1:]
        out["nll"] = nll
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
