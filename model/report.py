#!/usr/bin/env python3
"""The model report: size, training figures, held-out bits per token with the state carried vs reset, and
the paper's qualitative study (which tokens gain most from the carried state).

  /usr/bin/python3 model/report.py --model model/artifacts/brt.pt --run model/runs/default \
      --book kjv/Eze --out model/report.json > model/report.md
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brt import data as brt_data  # noqa: E402
from brt.reference import load_eager, score_tokens  # noqa: E402
from brt.tokenizer import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="model/artifacts/brt.pt")
    ap.add_argument("--run", default="model/runs/default")
    ap.add_argument("--data", default="model/data")
    ap.add_argument("--book", default="kjv/Eze", help="held-out document for the qualitative study")
    ap.add_argument("--reset-every", type=int, default=4, help="segment length (blocks) of the reset run")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="model/report.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_eager(args.model)
    tok = Tokenizer(os.path.join(os.path.dirname(args.model), "tokenizer.model"))
    docs = brt_data.load_split_texts(args.data, "test")
    W = meta["window"]

    tot = {"carried": 0.0, "reset": 0.0}
    by_kind = {}
    n_tokens = 0
    book = None
    t0 = time.time()
    for name, text in docs:
        ids = [tok.bos_id] + tok.encode(text)
        carried = score_tokens(model, ids)
        reset = score_tokens(model, ids, reset_every_blocks=args.reset_every)
        kind = name.split("/")[0]
        k = by_kind.setdefault(kind, {"tokens": 0, "carried": 0.0, "reset": 0.0})
        k["tokens"] += len(carried)
        k["carried"] += sum(carried)
        k["reset"] += sum(reset)
        tot["carried"] += sum(carried)
        tot["reset"] += sum(reset)
        n_tokens += len(carried)
        if name == args.book:
            book = (ids, carried, reset)
    eval_s = time.time() - t0
    ln2 = math.log(2)
    result = {
        "model": meta["name"], "fingerprint": meta["fingerprint"], "parameters": meta["parameters"],
        "config": meta["config"], "training": meta.get("training"),
        "test_documents": len(docs), "test_tokens": n_tokens, "reset_every_blocks": args.reset_every,
        "reset_every_tokens": args.reset_every * W,
        "bits_per_token_carried": tot["carried"] / n_tokens / ln2,
        "bits_per_token_reset": tot["reset"] / n_tokens / ln2,
        "by_kind": {k: {"tokens": v["tokens"], "bits_per_token_carried": v["carried"] / v["tokens"] / ln2,
                        "bits_per_token_reset": v["reset"] / v["tokens"] / ln2} for k, v in by_kind.items()},
        "eval_seconds": round(eval_s, 1),
    }
    # Qualitative study: tokens of the held-out book whose NLL improves most with the carried state.
    rows = []
    if book:
        ids, carried, reset = book
        last_seen = {}
        prev = {}
        for p, t in enumerate(ids):
            prev[p] = last_seen.get(t)
            last_seen[t] = p
        gains = sorted(range(len(carried)), key=lambda i: carried[i] - reset[i])
        for i in gains[:args.top]:
            p = i + 1  # position of the scored token
            t = ids[p]
            before = tok.decode(ids[max(1, p - 12):p])
            piece = tok.decode([t])
            after = tok.decode(ids[p + 1:p + 4])
            rows.append({"position": p, "token": piece, "nll_carried": round(carried[i], 3),
                         "nll_reset": round(reset[i], 3), "gain_nats": round(reset[i] - carried[i], 3),
                         "distance_to_previous_occurrence": (p - prev[p]) if prev[p] is not None else None,
                         "excerpt": f"{before}[{piece}]{after}".replace("\n", " / ")})
        result["book"] = {"name": args.book, "tokens": len(carried),
                          "bits_per_token_carried": sum(carried) / len(carried) / ln2,
                          "bits_per_token_reset": sum(reset) / len(reset) / ln2, "top_gains": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)

    tr = meta.get("training") or {}
    print(f"- Parameters: {meta['parameters']:,}; export {os.path.getsize(args.model) / 1e6:.1f} MB; "
          f"config L={meta['n_layers']} D={meta['d_model']} H={meta['n_heads']} W={W} S={meta['n_state']} "
          f"recurrent={meta['config']['recurrent_layers']} gate={meta['config']['gate']} vocab={meta['vocab_size']}")
    if tr:
        print(f"- Training: {tr['tokens']:,} tokens in {tr['seconds'] / 60:.1f} min ({tr['steps']} steps, "
              f"{tr['tokens_per_s']:.0f} tokens/s, {tr['threads']} threads, batch {tr['batch']} x "
              f"{tr['segment_tokens']} tokens)")
    print(f"- Held-out test split: {len(docs)} documents, {n_tokens:,} tokens. Bits per token with the state "
          f"carried through each document: **{result['bits_per_token_carried']:.4f}**; with the state reset "
          f"every {args.reset_every} blocks ({args.reset_every * W} tokens): **{result['bits_per_token_reset']:.4f}**")
    for k, v in result["by_kind"].items():
        print(f"  - {k}: {v['tokens']:,} tokens, carried {v['bits_per_token_carried']:.4f}, "
              f"reset {v['bits_per_token_reset']:.4f}")
    if rows:
        b = result["book"]
        print(f"\nHeld-out book `{args.book}` ({b['tokens']:,} tokens): carried {b['bits_per_token_carried']:.4f} "
              f"vs reset {b['bits_per_token_reset']:.4f} bits/token. The {len(rows)} tokens that gain most "
              f"from the carried state:\n")
        print("| position | token | NLL carried | NLL reset | distance back to previous occurrence | excerpt |")
        print("|---:|---|---:|---:|---:|---|")
        for r in rows:
            ex = r["excerpt"].replace("|", "\\|")
            print(f"| {r['position']} | `{r['token'].strip() or repr(r['token'])}` | {r['nll_carried']} | "
                  f"{r['nll_reset']} | {r['distance_to_previous_occurrence']} | {ex} |")


if __name__ == "__main__":
    main()
