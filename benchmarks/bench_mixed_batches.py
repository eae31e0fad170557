#!/usr/bin/env python3
"""What a mixed batch saves: one shard's decode step of 16 sessions with span rows joining it (prompts of
sessions that arrive while others generate), as two model calls (decode_range, then span_slots) against one
(mixed_slots), and the decode step alone. In-process, the shipped export, one intra-op thread (a row shard of
brt-server), the server's malloc settings and its packing rule (bench_util.pack_like_server).

  /usr/bin/python3 benchmarks/bench_mixed_batches.py --out benchmarks/results/mixed_batches.json

Each case runs --reps rounds; a round times the three forms once each, in alternating order, and the
median of each form is reported with the medians' ratios. Refuses to start when the 1-minute load is above
0.7 (--force runs anyway; the load before and after is in the JSON).
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import check_load, pack_like_server, use_server_allocator  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "model", "artifacts", "brt.pt"))
    ap.add_argument("--decode-rows", type=int, default=16)
    ap.add_argument("--spans", default="1x16,2x10,4x12,8x12", help="span rows x tokens each, a comma list")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--out", default="")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    command = "/usr/bin/python3 " + " ".join(sys.argv)
    load_before = check_load(args.force)
    use_server_allocator()
    import torch
    torch.set_num_threads(1)
    m = torch.jit.load(args.model)
    m.eval()
    packed = pack_like_server(m)
    b1 = args.decode_rows
    cases = [tuple(int(x) for x in c.split("x")) for c in args.spans.split(",") if c]
    kv, state = m.allocate_slots(b1 + max(b for b, _ in cases))
    m.init_slots(torch.arange(kv[0].shape[0]), kv, state)
    g = torch.Generator().manual_seed(1)
    d_tok = torch.randint(5, 4000, (b1,), generator=g)
    d_pos = torch.full((b1,), 20, dtype=torch.long)  # mid-block: no state update
    d_slots = torch.arange(b1)
    rows = []
    with torch.inference_mode():
        for b2, n in cases:
            s_tok = torch.randint(5, 4000, (b2, n), generator=g)
            s_len = torch.full((b2,), n)
            s_pos = torch.ones(b2, dtype=torch.long)  # one token (BOS) in: the span stays in the block
            s_slots = torch.arange(b1, b1 + b2)

            def two_calls():
                m.decode_range(d_tok, d_pos, 0, kv, state)
                m.span_slots(s_tok, s_len, s_pos, s_slots, kv, state, 0, False)

            def one_call():
                m.mixed_slots(d_tok, d_pos, d_slots, 0, s_tok, s_len, s_pos, s_slots, kv, state, 0, False)

            def decode_alone():
                m.decode_range(d_tok, d_pos, 0, kv, state)

            forms = [("two_calls", two_calls), ("mixed", one_call), ("decode_alone", decode_alone)]
            for _, f in forms:
                f()
                f()
            t = {name: [] for name, _ in forms}
            for r in range(args.reps):
                for name, f in (forms if r % 2 == 0 else list(reversed(forms))):
                    t0 = time.perf_counter()
                    f()
                    t[name].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in t.items()}
            row = {"decode_rows": b1, "span_rows": b2, "span_tokens_each": n,
                   "ms": {k: 1e3 * v for k, v in med.items()},
                   "mixed_over_two_calls": med["mixed"] / med["two_calls"],
                   "span_cost_two_calls_ms": 1e3 * (med["two_calls"] - med["decode_alone"]),
                   "span_cost_mixed_ms": 1e3 * (med["mixed"] - med["decode_alone"])}
            rows.append(row)
            print(f"decode {b1} + spans {b2}x{n}: two calls {row['ms']['two_calls']:.2f} ms, mixed "
                  f"{row['ms']['mixed']:.2f} ms ({row['mixed_over_two_calls']:.2f}x), decode alone "
                  f"{row['ms']['decode_alone']:.2f} ms; the spans add {row['span_cost_two_calls_ms']:.2f} vs "
                  f"{row['span_cost_mixed_ms']:.2f} ms", flush=True)
    res = {"command": command, "packed": packed, "reps": args.reps, "loadavg_before": list(load_before),
           "loadavg_after": list(os.getloadavg()),
           "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
           "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
