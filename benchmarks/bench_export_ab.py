#!/usr/bin/env python3
"""Two exports of the same weights, side by side in-process: did a change to brt/model.py slow a method down?

  git show REV:model/artifacts/brt.pt > /tmp/old.pt
  /usr/bin/python3 benchmarks/bench_export_ab.py --old /tmp/old.pt --new model/artifacts/brt.pt

Times score_slots (one row, 16 blocks), a 16-row decode_range and an 8-row span_slots (12 tokens each) on each
export's own pools, --rounds rounds in alternating order (the first two dropped as warm-up), and prints the
medians and new/old. Refuses to start when the 1-minute load is above 0.7 (--force runs anyway).
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import check_load, use_server_allocator  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    check_load(args.force)
    use_server_allocator()
    import torch
    torch.set_num_threads(args.threads)
    mods = {k: torch.jit.load(p).eval() for k, p in (("old", args.old), ("new", args.new))}
    pools = {}
    for k, m in mods.items():
        kv, st = m.allocate_slots(32)
        m.init_slots(torch.arange(32), kv, st)
        pools[k] = (kv, st)
    g = torch.Generator().manual_seed(3)
    toks = torch.randint(5, 4000, (1, 16 * 64), generator=g)
    dec = torch.randint(5, 4000, (16,), generator=g)
    dec_pos = torch.full((16,), 20, dtype=torch.long)
    span = torch.randint(5, 4000, (8, 12), generator=g)
    times = {k: {"score_slots 1x16 blocks": [], "decode_range 16 rows": [], "span_slots 8x12": []} for k in mods}
    with torch.inference_mode():
        for r in range(args.rounds):
            for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
                m, (kv, st) = mods[k], pools[k]
                calls = {
                    "score_slots 1x16 blocks": lambda: m.score_slots(toks, torch.tensor([0]), torch.tensor([0]), kv, st, 0),
                    "decode_range 16 rows": lambda: m.decode_range(dec, dec_pos, 8, kv, st),
                    "span_slots 8x12": lambda: m.span_slots(span, torch.full((8,), 12), torch.ones(8, dtype=torch.long),
                                                            torch.arange(24, 32), kv, st, 0, True),
                }
                for name, f in calls.items():
                    t0 = time.perf_counter()
                    f()
                    times[k][name].append(time.perf_counter() - t0)
    for name in times["old"]:
        o = statistics.median(times["old"][name][2:])
        n = statistics.median(times["new"][name][2:])
        print(f"{name}: old {1e3 * o:.2f} ms, new {1e3 * n:.2f} ms, new/old {n / o:.3f}")


if __name__ == "__main__":
    main()
