#!/usr/bin/env python3
"""Two sets of brt-server flags (or two builds) side by side through gRPC: Score and Generate, alternating.

Reproduce (e.g. the row workers pinned to their CPUs or not, 2026-12-04; ~4 minutes on 2 idle cores; waits
for a 1-minute load under 0.5 before it starts):

  /usr/bin/python3 benchmarks/ab_server.py --a=--pin_workers=off --b=--pin_workers=auto --rounds 3 \\
      --out benchmarks/results/pin_workers_ab_epyc.json

Two load clients: --b-client-rt runs B's brt-generate-load at real-time priority (chrt -f 10; root or
CAP_SYS_NICE), so that it reads each message when it arrives, as a client on another machine would, while the
server's row workers fill both cores; with the same server flags for A and B this separates the server's own
token timing from the cores the client waits for (the sixteenth pass in benchmarks/README.md).
Two builds: --a-bin /tmp/old/bin/brt-server (a copy of the binary before a change, with the tokenizer shim
beside it in /tmp/old/lib/libbrt_spm_shim.so, where brt-server looks) and the default.
Each round starts a fresh brt-server (--threads 2, the shipped model) for A, then one for B (B first in odd
rounds), warms it (a short Score of 8 sessions, 2 short Generate calls), and measures, in this order:
 - score_8: 8 concurrent sessions each scoring ~20 kB of held-out text (kjv/Eze), tokens/s (bench_engine.py's);
 - gen_1, gen_32: greedy Generate of --tokens tokens after a verse opening, 1 and 32 concurrent sessions, one
   token a message, through build/bin/brt-generate-load: aggregate tokens/s, inter-token gap p50 / p99 (ms),
   p99 / p50, and the share of gaps under a quarter of the median (tokens received in pairs);
 - gen_32_staggered: the same with session i first at offset 2i (block ends in different steps);
 - gen_32_interval8: 32 sessions at 8 tokens a message;
 - and for each Generate, the server's CPU seconds (from /proc) and the machine's idle share during it (the
   load client's start-up included, so it is an upper bound).
The report: each figure's median over rounds for A and B, and the median of the per-round B/A ratios.
"""
import argparse
import json
import os
import shlex
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from bench_util import percentile  # noqa: E402


def wait_quiet(limit):
    while os.getloadavg()[0] >= limit:
        time.sleep(10)
    return os.getloadavg()


def cpu_idle():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v)


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        p = f.read().rsplit(")", 1)[1].split()
    return (int(p[11]) + int(p[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default="", help="brt-server flags of A, one string (--a=\"--x=1 --y=2\")")
    ap.add_argument("--b", default="", help="brt-server flags of B (one string)")
    ap.add_argument("--a-bin", help="A's brt-server binary (default build/bin/brt-server)")
    ap.add_argument("--b-bin", help="B's brt-server binary (default build/bin/brt-server)")
    ap.add_argument("--a-client-rt", action="store_true",
                    help="A's load client at real-time priority (chrt -f 10: root or CAP_SYS_NICE)")
    ap.add_argument("--b-client-rt", action="store_true", help="B's load client at real-time priority")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet-load", type=float, default=0.5, help="wait for a 1-minute load under this first")
    ap.add_argument("--out", help="JSON report")
    args = ap.parse_args()
    command = "/usr/bin/python3 " + " ".join(shlex.quote(a) for a in sys.argv)

    from conftest import STUBS, BrtServer, corpus_docs, score
    from bench_engine import cut_at_newline, server_generate, server_score, verse_prompts
    pb = STUBS.pb
    docs = {d["name"]: d["text"].encode("utf-8") for d in corpus_docs("test")}
    acts, eze = docs["kjv/Acts"], docs["kjv/Eze"]
    texts8 = [cut_at_newline(eze[i * 20000:(i + 1) * 20000]) for i in range(8)]
    prompts = verse_prompts(acts, 32)
    flags = {"a": shlex.split(args.a), "b": shlex.split(args.b)}

    def measure(server, client_rt):
        out = {}
        out["score_8_tps"], _ = server_score(server, pb, score, texts8)
        for name, kw in (("gen_1", dict(prompts=prompts[:1])), ("gen_32", dict(prompts=prompts)),
                         ("gen_32_staggered", dict(prompts=prompts, stagger=2)),
                         ("gen_32_interval8", dict(prompts=prompts, stream_interval=8))):
            i0, t0 = cpu_idle()
            c0 = proc_cpu_s(server.proc.pid)
            tps, gaps, _ = server_generate(server, pb, max_tokens=args.tokens, client_rt=client_rt, **kw)
            i1, t1 = cpu_idle()
            out[f"{name}_tps"] = tps
            out[f"{name}_server_cpu_s"] = proc_cpu_s(server.proc.pid) - c0
            out[f"{name}_idle_share"] = (i1 - i0) / max(1, t1 - t0)
            if "stream_interval" not in kw:
                p50, p99 = percentile(gaps, 50), percentile(gaps, 99)
                out[f"{name}_gap_p50_ms"] = 1000 * p50
                out[f"{name}_gap_p99_ms"] = 1000 * p99
                out[f"{name}_p99_over_p50"] = p99 / p50
                # Tokens received right after the one before (under a quarter of the median gap): the
                # second of a pair that left or arrived together.
                out[f"{name}_paired_share"] = sum(1 for g in gaps if g < 0.25 * p50) / len(gaps)
        out["gen_32_over_score_8"] = out["gen_32_tps"] / out["score_8_tps"]
        out["gen_32_over_gen_1"] = out["gen_32_tps"] / out["gen_1_tps"]
        return out

    load_before = wait_quiet(args.quiet_load)
    rounds = []
    for r in range(args.rounds):
        row = {"round": r}
        for which in ("ab" if r % 2 == 0 else "ba"):
            server = BrtServer(*flags[which], threads=args.threads, binary=getattr(args, f"{which}_bin"))
            try:
                server_score(server, pb, score, [t[:1500] for t in texts8])
                server_generate(server, pb, prompts[:2], 16)
                row[which] = measure(server, getattr(args, f"{which}_client_rt"))
                row[which]["start_line"] = next((ln for ln in server.read_log().splitlines()
                                                 if "native decode" in ln), "")
            finally:
                server.stop()
        rounds.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k, v in rounds[0]["a"].items() if isinstance(v, float)]
    report = {"command": command, "a": args.a, "b": args.b, "a_bin": args.a_bin, "b_bin": args.b_bin,
              "a_client_rt": args.a_client_rt, "b_client_rt": args.b_client_rt, "load_before": load_before,
              "load_after": os.getloadavg(), "rounds": rounds,
              "median_a": {k: statistics.median(r["a"][k] for r in rounds) for k in keys},
              "median_b": {k: statistics.median(r["b"][k] for r in rounds) for k in keys},
              "median_ratio_b_over_a": {k: statistics.median(r["b"][k] / r["a"][k] for r in rounds
                                                             if r["a"][k]) for k in keys}}
    for k in keys:
        print(f"{k:34s} A {report['median_a'][k]:10.3f}  B {report['median_b'][k]:10.3f}  "
              f"B/A {report['median_ratio_b_over_a'][k]:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
