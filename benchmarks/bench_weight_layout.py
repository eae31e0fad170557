#!/usr/bin/env python3
"""Every matrix product of the shipped model's weights at M rows, one thread, in three forms, alternating:

  linear       F.linear(x, W): what the model does unpacked (OpenBLAS repacks W on every call)
  transposed   torch.mm(x, Wt) with Wt = W.t().contiguous() made once (OpenBLAS's other packing path)
  mkldnn       oneDNN's inner product with W converted once to its format (x converted each call)

  /usr/bin/python3 benchmarks/bench_weight_layout.py [--rounds 3] [--reps 30] [--out FILE.json]

The 33 weight matrices (19 MB) do not fit the caches, so each pass reads them from memory, as a decode step
does. Reports the best time per pass for each form and M (1, 8, 16, 32, 64) over the rounds, and how far
the transposed form's results are from F.linear's (they are not bitwise equal).
"""
import argparse
import json
import os
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "model", "artifacts", "brt.pt"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    m = torch.jit.load(args.model)
    ws = [p.detach().contiguous() for _, p in m.named_parameters() if p.dim() == 2 and min(p.shape) >= 64]
    wts = [w.t().contiguous() for w in ws]
    wms = [w.to_mkldnn() for w in ws]
    forms = {
        "linear": lambda xs: [torch.nn.functional.linear(xs[w.shape[1]], w) for w in ws],
        "transposed": lambda xs: [torch.mm(xs[wt.shape[0]], wt) for wt in wts],
        "mkldnn": lambda xs: [torch._C._nn.mkldnn_linear(xs[w.shape[1]].to_mkldnn(), wm, None).to_dense()
                              for w, wm in zip(ws, wms)],
    }
    out = {"command": "/usr/bin/python3 benchmarks/bench_weight_layout.py " + " ".join(
        f"--{k} {v}" for k, v in (("rounds", args.rounds), ("reps", args.reps))),
        "weights": len(ws), "weight_mb": sum(w.numel() for w in ws) * 4 / 1e6,
        "loadavg_before": os.getloadavg(), "ms_per_pass": {}, "max_abs_diff_transposed": {}}
    for rows in (1, 8, 16, 32, 64):
        xs = {k: torch.randn(rows, k) for k in set(w.shape[1] for w in ws)}
        a, b = forms["linear"](xs), forms["transposed"](xs)
        out["max_abs_diff_transposed"][rows] = max(float((p - q).abs().max()) for p, q in zip(a, b))
        times = {name: [] for name in forms}
        for _ in range(args.rounds):
            for name, f in forms.items():
                for _ in range(3):
                    f(xs)
                t = time.perf_counter()
                for _ in range(args.reps):
                    f(xs)
                times[name].append((time.perf_counter() - t) / args.reps * 1e3)
        out["ms_per_pass"][rows] = {name: min(v) for name, v in times.items()}
        print(rows, {k: round(v, 2) for k, v in out["ms_per_pass"][rows].items()},
              "transposed/linear %.2f" % (out["ms_per_pass"][rows]["transposed"] / out["ms_per_pass"][rows]["linear"]),
              "max |diff| %.2e" % out["max_abs_diff_transposed"][rows])
    out["loadavg_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
