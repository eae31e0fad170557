#!/usr/bin/env python3
"""Generation through the server against the same core in-process, at one and at several tokens per message.

Reproduce (about two minutes on 2 idle cores; refuses to start when the 1-minute load is above 0.7):

  /usr/bin/python3 benchmarks/bench_stream_interval.py --rounds 3 --out benchmarks/results/stream_interval.json

Each round, in alternating order (forward in even rounds, reversed in odd ones):
 - in-process: build/bin/brt-engine-bench (the server's core, no gRPC) runs 32 concurrent greedy Generate
   calls of --tokens tokens twice in one fresh process; the second run is the figure (the first warms the
   process as the server's warm-up below does);
 - server: a fresh brt-server (--threads 2), a 2-session warm-up, then for stream_interval 1 and 8 (order
   alternating) a 32-token warm-up run and the timed run of 32 sessions x --tokens tokens through
   build/bin/brt-generate-load (a C++ gRPC client).
Each figure is aggregate generated tokens/s (prompts included in the wall time). The report gives the
median of each and the ratios of the medians; every round's values are in the JSON.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from bench_util import check_load  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "stream_interval.json"))
    ap.add_argument("--force", action="store_true", help="run even if the 1-minute load is above 0.7")
    args = ap.parse_args()
    command = "/usr/bin/python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    load_before = check_load(args.force)

    from conftest import STUBS, BrtServer, corpus_docs
    from bench_engine import server_generate, verse_prompts
    pb = STUBS.pb
    docs = {d["name"]: d["text"].encode("utf-8") for d in corpus_docs("test")}
    acts, eze = docs["kjv/Acts"], docs["kjv/Eze"]
    prompts = verse_prompts(acts, 32)  # bench_engine.py's
    text_path = os.path.join(ROOT, "build", "bench_stream_interval_text.txt")
    with open(text_path, "wb") as f:  # brt-engine-bench wants a text; it only scores with --score_sessions
        f.write(eze[:20000])

    def in_process():
        out = subprocess.run(
            [os.path.join(ROOT, "build", "bin", "brt-engine-bench"),
             f"--model_dir={os.path.join(ROOT, 'model', 'artifacts')}",
             f"--shim={os.path.join(ROOT, 'build', 'lib', 'libbrt_spm_shim.so')}", f"--text={text_path}",
             "--threads=2", "--score_sessions=", "--generate_sessions=32,32", f"--generate_tokens={args.tokens}"],
            capture_output=True, text=True, check=True).stdout
        return json.loads(out)["generate"][1]["tokens_per_s"]

    def server(r):
        s = BrtServer(threads=2)
        try:
            server_generate(s, pb, prompts[:2], 4)
            got = {}
            for si in ([1, 8] if r % 2 == 0 else [8, 1]):
                server_generate(s, pb, prompts, 32, stream_interval=si)
                got[si] = server_generate(s, pb, prompts, args.tokens, stream_interval=si)[0]
            return got
        finally:
            s.stop()

    rounds = []
    for r in range(args.rounds):
        fig = {}
        for what in (["in_process", "server"] if r % 2 == 0 else ["server", "in_process"]):
            if what == "in_process":
                fig["in_process_tps"] = in_process()
            else:
                got = server(r)
                fig["server_interval1_tps"], fig["server_interval8_tps"] = got[1], got[8]
        rounds.append(fig)
        print(f"round {r}: " + ", ".join(f"{k}={v:,.0f}" for k, v in fig.items()), flush=True)
    load_after = os.getloadavg()
    med = {k: statistics.median(fr[k] for fr in rounds) for k in rounds[0]}
    ratios = {"server_interval1_over_in_process": med["server_interval1_tps"] / med["in_process_tps"],
              "server_interval8_over_in_process": med["server_interval8_tps"] / med["in_process_tps"],
              "server_interval8_over_interval1": med["server_interval8_tps"] / med["server_interval1_tps"]}
    res = {"command": command, "tokens": args.tokens, "sessions": 32, "loadavg_before": list(load_before),
           "loadavg_after": list(load_after), "rounds": rounds, "median": med, "ratios_of_medians": ratios}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nCommand: `{command}`; load before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print("| 32 sessions, greedy | tokens/s (median) | every round |\n| --- | ---: | --- |")
    for k in med:
        print(f"| {k} | {med[k]:,.0f} | {', '.join(f'{fr[k]:,.0f}' for fr in rounds)} |")
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
