#!/usr/bin/env python3
"""Trains a BRT with truncated backprop through time, resumably and reproducibly, then exports it.

Each batch row reads one document in order, in segments of `--segment-blocks` blocks (default 8 = 512
tokens). Gradients flow across the blocks of a segment; the state and key/value cache carry to the next
segment of the same document without gradient and reset (to zeros / the learned initial state) at a
document start. Every document is BOS + tokens + EOS; every token after BOS is a target once per visit.
`--weights austen=2` visits those documents twice per epoch.

The fixed gate `g = sigmoid(gate_bias)` starts towards remembering: its bias is spread evenly over
[--gate-init-low, --gate-init-high] across the state dimensions (default 1..5, g = 0.73 .. 0.993, a range of
timescales of about 4 to 150 blocks), not at ~0 (g = 0.5, which forgets half of the state every block).

Weight decay applies only to the matrices of the linear maps; embeddings, norms, per-head scales, relative
position biases, state IDs, the initial state and the gate bias are not decayed.

Every `--eval-every` steps the model is scored on the validation split (the first `--eval-tokens` tokens of
each validation document, the state carried through them); the best weights by validation bits per token
are kept in `RUN/best.pt` and are what gets exported.

Resuming (the default when the run directory holds a checkpoint) restores the weights, the optimiser, the
step, every RNG, the data stream's position and the carried memory, so a run interrupted and resumed is
the same run as one that was not (on the same machine and thread count).

`--device cuda` trains on a GPU with bf16 autocast (weights and optimiser in fp32); the CPU path is fp32.

Example (the shipped default model; model/retrain.sh has the exact command):
  /usr/bin/python3 model/train.py --run model/runs/default --total-steps 2600 --threads 1 --export model/artifacts/brt.pt
"""
from __future__ import annotations

import argparse
import contextlib
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

    def __init__(self, docs, batch, seg, pad_id, seed, weights=None):
        self.docs = docs
        self.weights = weights or [1] * len(docs)
        self.batch = batch
        self.seg = seg
        self.pad = pad_id
        self.rng = random.Random(seed)
        self.order = []
        self.cur = [-1] * batch
        self.pos = [0] * batch

    def state_dict(self):
        return {"rng": self.rng.getstate(), "order": list(self.order), "cur": list(self.cur), "pos": list(self.pos)}

    def load_state_dict(self, d):
        self.rng.setstate(d["rng"])
        self.order, self.cur, self.pos = list(d["order"]), list(d["cur"]), list(d["pos"])

    def _next_doc(self):
        if not self.order:
            self.order = [i for i in range(len(self.docs)) for _ in range(self.weights[i])]
            self.rng.shuffle(self.order)
        return self.order.pop()

    def next(self):
        x = np.full((self.batch, self.seg), self.pad, dtype=np.int64)
        y = np.full((self.batch, self.seg), -100, dtype=np.int64)
        reset = np.zeros(self.batch, dtype=bool)
        for r in range(self.batch):
            if self.cur[r] < 0 or self.pos[r] + 1 >= len(self.docs[self.cur[r]]):
                self.cur[r] = self._next_doc()
                self.pos[r] = 0
                reset[r] = True
            d, p = self.docs[self.cur[r]], self.pos[r]
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


def param_groups(model, weight_decay):
    """Decay only the matrices of linear maps (names '*.weight', 2-D, not the embedding)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() == 2 and n.endswith(".weight") and not n.startswith("embed"):
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def init_gates(model, low, high):
    with torch.no_grad():
        for layer in model.layers:
            if layer.rec_index >= 0 and not layer.lstm_gate:
                d = layer.gate_bias.numel()
                layer.gate_bias.copy_(torch.linspace(low, high, d))


def autocast_ctx(device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Validator:
    """The first `max_tokens` tokens of each validation document, padded into one batch, scored in segments
    with the state carried (eval mode, no dropout). Consumes no RNG, so it does not change the training run."""

    def __init__(self, docs, names, max_tokens, W, seg_blocks, device):
        docs = [d[:max_tokens + 1] for d in docs]
        T = max(len(d) for d in docs)
        T += (-T) % W
        self.x = torch.full((len(docs), T), 0, dtype=torch.long)
        self.y = torch.full((len(docs), T), -100, dtype=torch.long)
        for i, d in enumerate(docs):
            self.x[i, :len(d)] = torch.from_numpy(d)
            self.y[i, :len(d) - 1] = torch.from_numpy(d[1:])
        self.x, self.y = self.x.to(device), self.y.to(device)
        self.kinds = [n.split("/")[0] for n in names]
        self.seg = W * seg_blocks
        self.device = device

    @torch.no_grad()
    def __call__(self, model):
        was_training = model.training
        model.eval()
        B, T = self.x.shape
        kv, state = model.initial_state(B)
        nll = torch.zeros(B, dtype=torch.float64)
        count = torch.zeros(B, dtype=torch.float64)
        for s in range(0, T, self.seg):
            with autocast_ctx(self.device):
                logits, kv, state = model.forward_blocks(self.x[:, s:s + self.seg], kv, state)
            kv, state = kv.float(), state.float()
            y = self.y[:, s:s + self.seg]
            l = F.cross_entropy(logits.float().transpose(1, 2), y, ignore_index=-100, reduction="none")
            nll += l.sum(1).double().cpu()
            count += (y != -100).sum(1).double().cpu()
        model.train(was_training)
        out = {"bits_per_token": round(float(nll.sum() / count.sum()) / math.log(2), 4)}
        for k in sorted(set(self.kinds)):
            idx = [i for i, kk in enumerate(self.kinds) if kk == k]
            out[k] = round(float(nll[idx].sum() / count[idx].sum()) / math.log(2), 4)
        return out


def save_checkpoint(path, model, opt, step, tokens, cfg, elapsed, stream, kv, state, best):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "tokens": tokens,
                "config": cfg.to_dict(), "elapsed": elapsed, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "stream": stream.state_dict(), "kv": kv.cpu(), "state": state.cpu(), "best": best}, tmp)
    os.replace(tmp, path)


def export_best(args):
    """Exports RUN/best.pt (with RUN/summary.json, or the checkpoint's figures if the run has not finished)."""
    tok = Tokenizer(args.tokenizer)
    b = torch.load(os.path.join(args.run, "best.pt"), map_location="cpu")
    cfg = BRTConfig.from_dict(b["config"])
    model = BlockRecurrentTransformer(cfg)
    model.load_state_dict(b["model"])
    spath = os.path.join(args.run, "summary.json")
    if os.path.exists(spath):
        summary = json.load(open(spath))
    else:
        c = torch.load(os.path.join(args.run, "checkpoint.pt"), map_location="cpu")
        summary = {"steps": c["step"], "tokens": c["tokens"], "seconds": round(c["elapsed"], 1),
                   "tokens_per_s": round(c["tokens"] / max(c["elapsed"], 1e-9), 1), "threads": args.threads,
                   "device": args.device, "batch": args.batch, "segment_tokens": cfg.window * args.segment_blocks,
                   "seed": args.seed, "best_step": b["step"], "best_valid": b["valid"], "unfinished": True}
    model.eval()
    meta = export(model, cfg, tok.sha256, args.export, name=os.path.basename(args.run.rstrip("/")),
                  extra={"training": summary})
    print(f"exported {args.export} (weights of step {b['step']}) fingerprint {meta['fingerprint']}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="model/runs/default", help="run directory (checkpoints, log)")
    ap.add_argument("--data", default="model/data")
    ap.add_argument("--tokenizer", default="model/artifacts/tokenizer.model")
    ap.add_argument("--config", default=None, help="JSON file of BRTConfig overrides")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--segment-blocks", type=int, default=8, help="truncated backprop length in blocks")
    ap.add_argument("--weights", default="austen=2", help="visits per epoch by document kind, e.g. austen=2")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--total-steps", type=int, default=2600, help="length of the cosine schedule and of the run")
    ap.add_argument("--gate-init-low", type=float, default=1.0, help="fixed gate bias, lowest dimension")
    ap.add_argument("--gate-init-high", type=float, default=5.0, help="fixed gate bias, highest dimension")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-tokens", type=int, default=8192, help="tokens scored per validation document")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="safety limit: stop (resumably) after this much training time (0: none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (cuda: bf16 autocast)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--export", default=None, help="write the TorchScript export of the best weights here when done")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--export-only", action="store_true",
                    help="do not train: export the run's best weights (RUN/best.pt) to --export")
    args = ap.parse_args()
    if args.export_only:
        return export_best(args)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    os.makedirs(args.run, exist_ok=True)
    tok = Tokenizer(args.tokenizer)
    overrides = json.load(open(args.config)) if args.config else {}
    cfg = BRTConfig.from_dict({**BRTConfig(vocab_size=tok.vocab_size).to_dict(), **overrides})
    ckpt = os.path.join(args.run, "checkpoint.pt")
    c = torch.load(ckpt, map_location="cpu") if os.path.exists(ckpt) and not args.fresh else None
    if c is not None:
        cfg = BRTConfig.from_dict(c["config"])
    model = BlockRecurrentTransformer(cfg)
    init_gates(model, args.gate_init_low, args.gate_init_high)
    model.to(device)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-8)

    texts = brt_data.load_split_texts(args.data, "train")
    docs = brt_data.load_split_tokens(args.data, "train", tok)
    wmap = {k: int(v) for k, v in (kv.split("=") for kv in args.weights.split(",") if kv)}
    weights = [wmap.get(name.split("/")[0], 1) for name, _ in texts]
    vtexts = brt_data.load_split_texts(args.data, "valid")
    vdocs = brt_data.load_split_tokens(args.data, "valid", tok)
    W = cfg.window
    seg = W * args.segment_blocks
    validate = Validator(vdocs, [n for n, _ in vtexts], args.eval_tokens, W, args.segment_blocks, device)
    stream = DocStream(docs, args.batch, seg, cfg.pad_id, args.seed, weights)
    kv, state = model.initial_state(args.batch)
    kv, state = kv.detach(), state.detach()
    step, tokens_seen, elapsed_before = 0, 0, 0.0
    best = {"step": -1, "bits_per_token": float("inf")}
    if c is not None:
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        step, tokens_seen, elapsed_before = c["step"], c["tokens"], c["elapsed"]
        torch.set_rng_state(c["torch_rng"])
        if c.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(c["cuda_rng"])
        stream.load_state_dict(c["stream"])
        kv, state = c["kv"].to(device), c["state"].to(device)
        best = c["best"]
        print(f"resumed from {ckpt} at step {step}", flush=True)
    with open(os.path.join(args.run, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1)

    n_tok = sum(len(d) for d in docs)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log = open(os.path.join(args.run, "train_log.jsonl"), "a")
    header = {"header": "resumed" if c is not None else "start", "step": step, "argv": sys.argv[1:],
              "args": vars(args), "config": cfg.to_dict(), "train_documents": len(docs), "train_tokens": n_tok,
              "epoch_tokens": int(sum(len(d) * w for d, w in zip(docs, weights))), "parameters": n_params,
              "torch": torch.__version__}
    log.write(json.dumps(header) + "\n")
    log.flush()
    print(json.dumps(header), flush=True)
    model.train()
    t_start = time.time()
    t_log, tok_log = t_start, 0
    stopped_on_time = False
    best_path = os.path.join(args.run, "best.pt")
    while step < args.total_steps:
        elapsed = elapsed_before + time.time() - t_start
        if args.minutes and elapsed > args.minutes * 60:
            stopped_on_time = True
            break
        x, y, reset = stream.next()
        x, y, reset = x.to(device), y.to(device), reset.to(device)
        kv0, st0 = model.initial_state(args.batch)
        kv = torch.where(reset.view(-1, 1, 1, 1, 1, 1), kv0.detach(), kv.detach())
        state = torch.where(reset.view(-1, 1, 1, 1, 1), st0, state.detach())
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        with autocast_ctx(device):
            logits, kv, state = model.forward_blocks(x, kv, state)
        kv, state = kv.float(), state.float()
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), y.reshape(-1), ignore_index=-100)
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
            gates = [torch.sigmoid(l.gate_bias).mean().item() for l in model.layers
                     if l.rec_index >= 0 and not l.lstm_gate]
            rec = {"step": step, "loss": round(loss.item(), 4), "bits_per_token": round(loss.item() / math.log(2), 4),
                   "lr": round(lr_at(step, args), 6), "grad_norm": round(float(gnorm), 3),
                   "gate_mean": [round(g, 4) for g in gates],
                   "tokens": tokens_seen, "tokens_per_s": round(tok_log / (now - t_log), 1),
                   "elapsed_s": round(elapsed_before + now - t_start, 1)}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            t_log, tok_log = now, 0
        if step % args.eval_every == 0 or step == args.total_steps:
            t0 = time.time()
            v = validate(model)
            rec = {"step": step, "valid": v, "eval_s": round(time.time() - t0, 1)}
            if v["bits_per_token"] < best["bits_per_token"]:
                best = {"step": step, "bits_per_token": v["bits_per_token"], "valid": v}
                tmp = best_path + ".tmp"
                torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": step, "valid": v}, tmp)
                os.replace(tmp, best_path)
                rec["best"] = True
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            t_start -= time.time() - t0  # evaluation time is not training time
        if step % args.checkpoint_every == 0:
            save_checkpoint(ckpt, model, opt, step, tokens_seen, cfg, elapsed_before + time.time() - t_start,
                            stream, kv, state, best)
    total_elapsed = elapsed_before + time.time() - t_start
    save_checkpoint(ckpt, model, opt, step, tokens_seen, cfg, total_elapsed, stream, kv, state, best)
    if stopped_on_time:
        print(f"stopped on the --minutes limit at step {step}; rerun the same command to continue", flush=True)
        return
    summary = {"steps": step, "tokens": tokens_seen, "seconds": round(total_elapsed, 1),
               "tokens_per_s": round(tokens_seen / max(total_elapsed, 1e-9), 1), "threads": args.threads,
               "device": args.device, "batch": args.batch, "segment_tokens": seg, "seed": args.seed,
               "best_step": best["step"], "best_valid": best.get("valid")}
    with open(os.path.join(args.run, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log.write(json.dumps({"done": summary}) + "\n")
    log.flush()
    print("done", json.dumps(summary), flush=True)
    if args.export:
        if os.path.exists(best_path):
            model.load_state_dict(torch.load(best_path, map_location="cpu")["model"])
        model.eval()
        meta = export(model, cfg, tok.sha256, args.export, name=os.path.basename(args.run.rstrip("/")),
                      extra={"training": summary})
        print(f"exported {args.export} (weights of step {best['step']}) fingerprint {meta['fingerprint']}",
              flush=True)


if __name__ == "__main__":
    main()
