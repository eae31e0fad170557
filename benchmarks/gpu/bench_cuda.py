#!/usr/bin/env python3
"""CUDA correctness and throughput of the export contract the server runs (format 2, slot pools).

Run on a GPU machine (PyTorch with CUDA; no gRPC needed) through benchmarks/gpu/run.sh, or directly:

  python3 benchmarks/gpu/bench_cuda.py --model model/artifacts/brt.pt --text model/data/test.jsonl \
      --out /tmp/cuda.json [--quick]

It calls the TorchScript methods brt-server's ModelRunner calls (init_slots, score_slots, decode_slots,
finish_slots) on pools allocated on the device, and measures:
1. correctness on CUDA: token-by-token decode vs block scoring (log-probs and memory), rows at staggered
   offsets in one batch, fp32; bf16 against fp32 (max |d logprob|, mean NLL difference);
2. throughput: score_slots (2 blocks a call) and decode_slots (+ finish_slots for rows that complete a
   block) at 1..256 sessions, fp32 and bf16, tokens/s with sync() around the timed loop.
Prints one JSON document (also written to --out).
"""
import argparse
import json
import os
import time

import torch


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def load(path, device, dtype):
    files = {"brt_meta.json": ""}
    m = torch.jit.load(path, map_location="cpu", _extra_files=files)
    meta = json.loads(files["brt_meta.json"])
    m = m.to(device)
    if dtype != torch.float32:
        m = m.to(dtype)
    m.eval()
    return m, meta


def pools(meta, p, device, dtype):
    h, dh = meta["n_heads"], meta["head_dim"]
    kv = [torch.zeros(p, 2, h, c, dh, device=device, dtype=dtype) for c in meta["kv_slots"]]
    st = torch.zeros(p, meta["n_recurrent"], 3, meta["n_state"], meta["d_model"], device=device, dtype=dtype)
    return kv, st


def text_tokens(path, model_dir, n):
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "model"))
    try:
        from brt.tokenizer import Tokenizer
        tok = Tokenizer(os.path.join(model_dir, "tokenizer.model"))
        text = "".join(json.loads(l)["text"] for l in open(path) if l.strip())
        ids = tok.encode_bytes(text.encode()[: n * 6])
    except Exception as e:  # no sentencepiece on the GPU machine: random ids are fine for speed
        print(f"(tokenizer unavailable: {e}; using random token ids)")
        ids = torch.randint(4, 4000, (n,)).tolist()
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def correctness(path, meta, ids, device):
    W = meta["window"]
    out = {}
    m, _ = load(path, device, torch.float32)
    B, blocks = 4, 6
    n = blocks * W
    rows = torch.tensor([ids[i * 997:i * 997 + n] for i in range(B)], device=device)
    rows[:, 0] = meta["bos_id"]
    slots = torch.tensor([3, 0, 5, 2], device=device)
    with torch.inference_mode():
        kv_a, st_a = pools(meta, 8, device, torch.float32)
        kv_b, st_b = pools(meta, 8, device, torch.float32)
        m.init_slots(slots, kv_a, st_a)
        m.init_slots(slots, kv_b, st_b)
        starts = torch.zeros(B, dtype=torch.long, device=device)
        tgt, _, _, nxt = m.score_slots(rows, starts, slots, kv_a, st_a, 0)
        # Token by token, rows staggered: row i starts i tokens late and catches up at the end.
        lps = [[None] * n for _ in range(B)]
        pos = [0] * B
        for step in range(n + B):
            act = [i for i in range(B) if step >= i and pos[i] < n]
            if not act:
                continue
            t = torch.tensor([int(rows[i, pos[i]]) for i in act], device=device)
            p = torch.tensor([pos[i] for i in act], device=device)
            s = slots[act]
            lp = m.decode_slots(t, p, s, kv_b, st_b)
            done = [k for k, i in enumerate(act) if pos[i] % W == W - 1]
            if done:
                m.finish_slots(s[done], kv_b, st_b)
            for k, i in enumerate(act):
                lps[i][pos[i]] = lp[k]
                pos[i] += 1
        d = 0.0
        for i in range(B):
            for j in range(n - 1):
                d = max(d, abs(float(lps[i][j][rows[i, j + 1]]) - float(tgt[i, j])))
            d = max(d, float((lps[i][n - 1] - nxt[i]).abs().max()))
        mem = max(float((a[slots] - b[slots]).abs().max()) for a, b in zip(kv_a, kv_b))
        mem = max(mem, float((st_a[slots] - st_b[slots]).abs().max()))
    out["fp32_decode_vs_blocks_max_abs_logprob"] = d
    out["fp32_decode_vs_blocks_max_abs_memory"] = mem
    # bf16 vs fp32 on block scoring.
    mb, _ = load(path, device, torch.bfloat16)
    with torch.inference_mode():
        kv, st = pools(meta, 8, device, torch.bfloat16)
        mb.init_slots(slots, kv, st)
        tgt16, _, _, _ = mb.score_slots(rows, starts, slots, kv, st, 0)
    out["bf16_vs_fp32_max_abs_logprob"] = float((tgt16.float() - tgt).abs().max())
    out["bf16_vs_fp32_mean_nll_diff"] = float((-tgt16.float()).mean() - (-tgt).mean())
    return out


def throughput(path, meta, ids, device, dtype, sizes, seconds):
    W = meta["window"]
    m, _ = load(path, device, dtype)
    res = {"score": [], "decode": []}
    for B in sizes:
        with torch.inference_mode():
            kv, st = pools(meta, B, device, dtype)
            slots = torch.arange(B, device=device)
            m.init_slots(slots, kv, st)
            n = 2 * W
            toks = torch.tensor([ids[(i * 131) % (len(ids) - n):][:n] for i in range(B)], device=device)
            calls, pos = 0, 0
            m.score_slots(toks, torch.full((B,), 0, device=device), slots, kv, st, 0)  # warm-up
            sync()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                pos += n
                m.score_slots(toks, torch.full((B,), pos, device=device), slots, kv, st, 0)
                calls += 1
            sync()
            dt = time.perf_counter() - t0
            res["score"].append({"sessions": B, "tokens_per_s": calls * B * n / dt})
            # Decode: rows at staggered offsets; finish_slots for the rows that complete a block.
            positions = torch.tensor([(i * 7) % W for i in range(B)], device=device)
            host_pos = [(i * 7) % W for i in range(B)]
            tok = toks[:, 0].contiguous()
            steps = 0
            sync()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                m.decode_slots(tok, positions, slots, kv, st)
                done = [i for i in range(B) if host_pos[i] % W == W - 1]
                if done:
                    m.finish_slots(slots[done], kv, st)
                positions += 1
                host_pos = [p + 1 for p in host_pos]
                steps += 1
            sync()
            dt = time.perf_counter() - t0
            res["decode"].append({"sessions": B, "tokens_per_s": steps * B / dt, "step_ms": 1e3 * dt / steps})
        print(json.dumps({"dtype": str(dtype), "sessions": B, "score": res["score"][-1],
                          "decode": res["decode"][-1]}), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="model/artifacts/brt.pt")
    ap.add_argument("--text", default="model/data/test.jsonl")
    ap.add_argument("--out", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda:0", help="cuda:0 (cpu only to smoke-test this script)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: nothing to measure here")
        return 2
    files = {"brt_meta.json": ""}
    torch.jit.load(args.model, map_location="cpu", _extra_files=files)
    meta = json.loads(files["brt_meta.json"])
    ids = text_tokens(args.text, os.path.dirname(args.model), 200_000)
    report = {"gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else "none (cpu smoke run)", "torch": torch.__version__, "model": meta["name"],
              "fingerprint": meta["fingerprint"][:16]}
    report["correctness"] = correctness(args.model, meta, ids, device)
    print(json.dumps(report["correctness"]), flush=True)
    sizes = [1, 8, 64] if args.quick else [1, 8, 32, 64, 128, 256, 1024]
    secs = 0.5 if args.quick else 2.0
    report["fp32"] = throughput(args.model, meta, ids, device, torch.float32, sizes, secs)
    report["bf16"] = throughput(args.model, meta, ids, device, torch.bfloat16, sizes, secs)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
