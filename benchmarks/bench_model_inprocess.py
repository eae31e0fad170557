#!/usr/bin/env python3
"""In-process TorchScript throughput of an export: contract v2 (slot pools) vs v1, no server involved.

  /usr/bin/python3 benchmarks/bench_model_inprocess.py --model model/artifacts/brt.pt [--threads 2]

Prints one JSON line:
- score_slots tokens/s at each --score-batches (N=--blocks whole blocks per call and row; a comma list such as
  `--blocks 16,2` measures each N, keyed "BxN"; `--decode-batches ""` skips the decode figures);
- decode steps/s (and tokens/s = steps/s * batch) at each --decode-batches, rows at staggered offsets in their
  blocks, in non-contiguous slots of a pool twice the batch: v2 = decode_slots plus finish_slots for the rows
  whose token completed a block; v1 = decode_step on per-batch memory tensors (returns new memory every step);
- the load average at the start and end, and "contended": true when the 1-minute load exceeded 1.
Each figure is the best of --rounds measurements of --seconds each (v1 and v2 alternate), which damps the
noise of a shared machine.

glibc malloc: by default the benchmark re-runs itself with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ set
(fixed thresholds). Without them, the per-step temporaries of several MB (a batch's ring rows, the attention
products) are sometimes served by fresh mmap()s, page-faulted on every step, and the same process runs 5-7x
slower at batch 8-64 (seen here: 800k minor faults in 16 s); v1's per-step memory copies (over 32 MB at batch
64) always are. --no-malloc-tuning measures the default behaviour.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

import torch


MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def load_avg():
    return os.getloadavg()[0]


def timed(fn, min_seconds, min_iters=3):
    """Calls fn until min_seconds and min_iters have passed; returns calls per second."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n >= min_iters:
            return n / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="model/artifacts/brt.pt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum measuring time per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per figure; the best one counts")
    ap.add_argument("--blocks", default="2",
                    help="blocks per score_slots call and row; a comma list measures each (keys 'BxN')")
    ap.add_argument("--score-batches", default="1,8")
    ap.add_argument("--decode-batches", default="1,8,32,64", help="empty: no decode figures")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default malloc thresholds")
    args = ap.parse_args()
    if not args.no_malloc_tuning and MALLOC_ENV[0] not in os.environ:
        env = dict(os.environ)
        env.update({k: v for k, v in zip(MALLOC_ENV, ["4294967296", "4294967296"])})
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    files = {"brt_meta.json": ""}
    m = torch.jit.load(args.model, map_location=dev, _extra_files=files).eval()
    meta = json.loads(files["brt_meta.json"])
    blocks = [int(x) for x in args.blocks.split(",")]
    W, V = meta["window"], meta["vocab_size"]
    load0 = load_avg()
    out = {"model": meta.get("name"), "format": meta.get("format"), "device": args.device,
           "threads": args.threads, "window": W, "blocks_per_call": blocks if len(blocks) > 1 else blocks[0],
           "rounds": args.rounds,
           "seconds_per_round": args.seconds, "torch": torch.__version__,
           "machine": platform.machine(), "cpus": os.cpu_count(),
           "malloc_env": {k: os.environ[k] for k in MALLOC_ENV if k in os.environ}}
    g = torch.Generator().manual_seed(0)

    def slots_for(B):
        # A pool twice the batch; the rows sit in every other slot, in scrambled order.
        P = 2 * B
        perm = torch.randperm(P, generator=g)[:B]
        return P, perm.to(dev)

    score = {}
    with torch.inference_mode():
        for B, N in [(int(b), n) for b in args.score_batches.split(",") if b for n in blocks]:
            T = N * W
            P, slots = slots_for(B)
            kv, state = m.allocate_slots(P)
            m.init_slots(slots, kv, state)
            toks = torch.randint(4, V, (B, T), generator=g).to(dev)
            pos = [0]

            def run():
                starts = torch.full((B,), pos[0], dtype=torch.long, device=dev)
                m.score_slots(toks, starts, slots, kv, state, 0)
                sync()
                pos[0] += T

            for _ in range(3):
                run()
            key = str(B) if len(blocks) == 1 else f"{B}x{N}"
            score[key] = round(max(timed(run, args.seconds) for _ in range(args.rounds)) * B * T, 1)
        out["score_slots_tokens_per_s"] = score

        dec2, dec1 = {}, {}
        for B in [int(x) for x in args.decode_batches.split(",") if x]:
            P, slots = slots_for(B)
            toks = torch.randint(4, V, (B,), generator=g).to(dev)
            # Staggered rows: different offsets in their blocks (and different blocks), so finish_slots
            # runs for a few rows at a time.
            offs = [(r * max(1, W // B) + r * 7) % W + W * (1 + r % 3) for r in range(B)]
            # v2
            kv, state = m.allocate_slots(P)
            m.init_slots(slots, kv, state)
            cur = list(offs)
            slots_host = slots.tolist()

            def step2():
                p = torch.tensor(cur, dtype=torch.long).to(dev)
                m.decode_slots(toks, p, slots, kv, state)
                done = [slots_host[r] for r in range(B) if cur[r] % W == W - 1]
                if done:
                    m.finish_slots(torch.tensor(done, dtype=torch.long).to(dev), kv, state)
                sync()
                for r in range(B):
                    cur[r] += 1

            for _ in range(W + 3):  # warm-up, includes finish_slots calls
                step2()
            # v1
            mem = list(m.initial_state(B))
            cur1 = list(offs)

            def step1():
                p = torch.tensor(cur1, dtype=torch.long).to(dev)
                _, mem[0], mem[1] = m.decode_step(toks, p, mem[0], mem[1])
                sync()
                for r in range(B):
                    cur1[r] += 1

            for _ in range(W + 3):
                step1()
            best2, best1 = 0.0, 0.0
            for _ in range(args.rounds):
                best2 = max(best2, timed(step2, args.seconds, min_iters=8))
                best1 = max(best1, timed(step1, args.seconds, min_iters=8))
            dec2[str(B)] = round(best2, 1)
            dec1[str(B)] = round(best1, 1)
        out["decode_slots_steps_per_s"] = dec2
        out["decode_step_v1_steps_per_s"] = dec1
        out["decode_speedup_v2_over_v1"] = {b: round(dec2[b] / dec1[b], 2) for b in dec2}
        out["decode_slots_tokens_per_s"] = {b: round(dec2[b] * int(b), 1) for b in dec2}
    load1 = load_avg()
    out["load_avg_1min"] = [round(load0, 2), round(load1, 2)]
    out["contended"] = max(load0, load1) > 1.0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_user_s"], out["cpu_sys_s"], out["minor_faults"] = round(ru.ru_utime, 1), round(ru.ru_stime, 1), ru.ru_minflt
    print(json.dumps(out))


if __name__ == "__main__":
    main()
