#!/usr/bin/env python3
"""Trains a BRT with truncated backprop through time, resumably, then exports it.

Each batch row reads one document in order, in segments of `--segment-blocks` blocks. Gradients flow across
the blocks of a segment; the state and key/value cache carry to the next segment of the same document
without gradient and reset (to zeros / the learned initial state) at a document start. Every document is
BOS + tokens + EOS; every token after BOS is a target exactly once.

Resuming (`--resume`, the default when the run directory holds a checkpoint) restores the weights, the
optimiser, the step and the RNG; the data stream restarts from a seed derived from the step, so rows begin
fresh documents (their carried state is not checkpointed).

Example (the shipped default model):
  /usr/bin/python3 model/train.py --run model/runs/default --minutes 60 --export model/artifacts/brt.pt
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brt.config import BRTConfig  # noqa: E402
from brt.export import export  # noqa: E402
from brt.model import BlockRecurrentTransformer  # noqa: E402
from brt.tokenizer import Tokenizer  # noqa: E402
from brt import data as brt_data  # noqa: E402


class DocStream:
    """B rows, each walking through documents in segments of `seg` tokens."""

    def __init__(self, docs, batch, seg, pad_id, seed):
        self.docs = docs
        self.batch = batch
        self.seg = seg
        self.pad = pad_id
        self.rng = random.Random(seed)
        self.order = []
        self.cur = [None] * batch
        self.pos = [0] * batch

    def _next_doc(self):
        if not self.order:
            self.order = list(range(len(self.docs)))
            self.rng.shuffle(self.order)
        return self.docs[self.order.pop()]

    def next(self):
        x = np.full((self.batch, self.seg), self.pad, dtype=np.int64)
        y = np.full((self.batch, self.seg), -100, dtype=np.int64)
        reset = np.zeros(self.batch, dtype=bool)
        for r in range(self.batch):
            if self.cur[r] is None or self.pos[r] + 1 >= len(self.cur[r]):
                self.cur[r] = self._next_doc()
                self.pos[r] = 0
                reset[r] = True
            d, p = self.cur[r], self.pos[r]
            inp = d[p:p + self.seg]
            tgt = d[p + 1:p + self.seg + 1]
            x[r, :len(inp)] = inp
            y[r, :len(tgt)] = tgt
            self.pos[r] = p + self.seg
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(reset)


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.total_steps - args.warmup))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(path, model, opt, step, tokens, cfg, elapsed):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "tokens": tokens,
                "config": cfg.to_dict(), "elapsed": elapsed, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="model/runs/default", help="run directory (checkpoints, log)")
    ap.add_argument("--data", default="model/data")
    ap.add_argument("--tokenizer", default="model/artifacts/tokenizer.model")
    ap.add_argument("--config", default=None, help="JSON file of BRTConfig overrides")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--segment-blocks", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--total-steps", type=int, default=6000, help="length of the cosine schedule")
    ap.add_argument("--minutes", type=float, default=60.0, help="stop after this much training time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--export", default=None, help="write the TorchScript export here when done")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.run, exist_ok=True)
    tok = Tokenizer(args.tokenizer)
    overrides = json.load(open(args.config)) if args.config else {}
    cfg = BRTConfig.from_dict({**BRTConfig(vocab_size=tok.vocab_size).to_dict(), **overrides})
    model = BlockRecurrentTransformer(cfg)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() == 2 and "state_ids" not in n
             and "initial" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and not any(p is q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    ckpt = os.path.join(args.run, "checkpoint.pt")
    step, tokens_seen, elapsed_before = 0, 0, 0.0
    if os.path.exists(ckpt) and not args.fresh:
        c = torch.load(ckpt)
        cfg = BRTConfig.from_dict(c["config"])
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        step, tokens_seen, elapsed_before = c["step"], c["tokens"], c["elapsed"]
        torch.set_rng_state(c["torch_rng"])
        print(f"resumed from {ckpt} at step {step}", flush=True)
    with open(os.path.join(args.run, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1)

    docs = brt_data.load_split_tokens(args.data, "train", tok)
    n_tok = sum(len(d) for d in docs)
    print(f"train: {len(docs)} documents, {n_tok} tokens; params "
          f"{sum(p.numel() for p in model.parameters() if p.requires_grad)}", flush=True)
    W = cfg.window
    seg = W * args.segment_blocks
    stream = DocStream(docs, args.batch, seg, cfg.pad_id, args.seed + step)
    log = open(os.path.join(args.run, "train_log.jsonl"), "a")
    model.train()
    kv, state = model.initial_state(args.batch)
    kv, state = kv.detach(), state.detach()
    t_start = time.time()
    t_log, tok_log = t_start, 0
    while True:
        elapsed = elapsed_before + time.time() - t_start
        if elapsed > args.minutes * 60:
            break
        x, y, reset = stream.next()
        kv0, st0 = model.initial_state(args.batch)
        r6 = reset.view(-1, 1, 1, 1, 1, 1)
        kv = torch.where(r6, kv0.detach(), kv.detach())
        state = torch.where(reset.view(-1, 1, 1, 1, 1), st0, state.detach())
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        logits, kv, state = model.forward_blocks(x, kv, state)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        n = int((y != -100).sum())
        tokens_seen += n
        tok_log += n
        if step % 20 == 0:
            now = time.time()
            rec = {"step": step, "loss": round(loss.item(), 4), "bits_per_token": round(loss.item() / math.log(2), 4),
                   "lr": round(lr_at(step, args), 6), "grad_norm": round(float(gnorm), 3),
                   "tokens": tokens_seen, "tokens_per_s": round(tok_log / (now - t_log), 1),
                   "elapsed_s": round(elapsed_before + now - t_start, 1)}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            t_log, tok_log = now, 0
        if step % args.checkpoint_every == 0:
            save_checkpoint(ckpt, model, opt, step, tokens_seen, cfg, elapsed_before + time.time() - t_start)
    total_elapsed = elapsed_before + time.time() - t_start
    save_checkpoint(ckpt, model, opt, step, tokens_seen, cfg, total_elapsed)
    summary = {"steps": step, "tokens": tokens_seen, "seconds": round(total_elapsed, 1),
               "tokens_per_s": round(tokens_seen / max(total_elapsed, 1e-9), 1), "threads": args.threads,
               "batch": args.batch, "segment_tokens": seg}
    with open(os.path.join(args.run, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("done", json.dumps(summary), flush=True)
    if args.export:
        model.eval()
        meta = export(model, cfg, tok.sha256, args.export, name=os.path.basename(args.run.rstrip("/")),
                      extra={"training": summary})
        print(f"exported {args.export} fingerprint {meta['fingerprint']}", flush=True)


if __name__ == "__main__":
    main()
