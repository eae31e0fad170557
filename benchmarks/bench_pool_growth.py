#!/usr/bin/env python3
"""What growing the session memory pools costs the sessions already generating, through the server.

Reproduce (about a minute on 2 idle cores; refuses to start when the 1-minute load is above 0.7):

  /usr/bin/python3 benchmarks/bench_pool_growth.py --rounds 3 --out benchmarks/results/pool_growth.json

A fresh brt-server per run, started with --initial_session_slots=SLOTS (32 by default) and a per-client call
limit (--max_calls_per_peer) of at least SESSIONS; after a 2-session
warm-up, SESSIONS greedy Generate calls (40 by default, so the pools must double once) of --tokens tokens
each, call i starting i * --arrival-ms ms after the first (build/bin/brt-generate-load --arrival_ms), so
the session that needs slot SLOTS arrives while the others generate. Three settings, in alternating order
each round (forward in even rounds, reversed in odd ones):
 - copy: --pool_growth=copy, new zeroed pools and a copy of the old ones on the executor (every call
   waits; as before 2026-12-04, and as on a GPU);
 - in_place: --pool_growth=in_place (the default), the pools are views of reserved address space and grow
   in place; a new slot's pages are faulted in by its session's first writes;
 - no_growth: --initial_session_slots=2*SLOTS (the pools never grow: the floor).
Reports the median over rounds of aggregate tokens/s and the inter-token gap p50 / p90 / p99 / max (ms).
"""
import argparse
import json
import os
import shlex
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from bench_util import check_load, percentile  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slots", type=int, default=32, help="--initial_session_slots")
    ap.add_argument("--sessions", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--arrival-ms", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "pool_growth.json"))
    ap.add_argument("--force", action="store_true", help="run even if the 1-minute load is above 0.7")
    args = ap.parse_args()
    if args.sessions <= args.slots:
        ap.error("--sessions must exceed --slots, or the pools never grow")
    command = "/usr/bin/python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    load_before = check_load(args.force)

    from conftest import STUBS, BrtServer, corpus_docs
    from bench_engine import server_generate, verse_prompts
    pb = STUBS.pb
    docs = {d["name"]: d["text"].encode("utf-8") for d in corpus_docs("test")}
    prompts = verse_prompts(docs["kjv/Acts"], args.sessions)

    grow = [f"--initial_session_slots={args.slots}"]
    settings = [("copy", grow + ["--pool_growth=copy"]),
                ("in_place", grow + ["--pool_growth=in_place"]),
                ("no_growth", [f"--initial_session_slots={2 * args.slots}"])]

    def run(flags):
        s = BrtServer(*flags, f"--max_calls_per_peer={max(64, args.sessions)}", threads=2)
        try:
            server_generate(s, pb, prompts[:2], 4)
            tps, gaps, _ = server_generate(s, pb, prompts, args.tokens, arrival_ms=args.arrival_ms)
            ms = [1000 * g for g in gaps]
            return {"tps": tps, "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
                    "p99_ms": percentile(ms, 99), "max_ms": max(ms)}
        finally:
            s.stop()

    rounds = []
    for r in range(args.rounds):
        fig = {}
        for name, flags in (settings if r % 2 == 0 else settings[::-1]):
            fig[name] = run(flags)
            print(f"round {r} {name}: " + ", ".join(f"{k}={v:.1f}" for k, v in fig[name].items()), flush=True)
        rounds.append(fig)
    median = {name: {k: statistics.median(fr[name][k] for fr in rounds) for k in rounds[0][name]}
              for name, _ in settings}
    res = {"command": command, "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
           "settings": {name: flags for name, flags in settings}, "sessions": args.sessions,
           "tokens": args.tokens, "arrival_ms": args.arrival_ms, "rounds": rounds, "median": median}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"# {command}; 1-minute load {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("| setting | tokens/s | gap p50 / p90 / p99 / max (ms) |")
    print("| --- | ---: | --- |")
    for name, _ in settings:
        m = median[name]
        print(f"| {name} | {m['tps']:,.0f} | {m['p50_ms']:.1f} / {m['p90_ms']:.1f} / {m['p99_ms']:.1f} / "
              f"{m['max_ms']:.0f} |")


if __name__ == "__main__":
    main()
