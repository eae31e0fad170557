#!/usr/bin/env python3
"""The cost of metrics, end to end: scoring throughput of brt-server with metrics on and off, in one run.

  BRT_BUILD_DIR=build python3 benchmarks/bench_metrics_overhead.py [--model_dir DIR] [--threads 2] \
      [--rounds 6] [--bytes 20000] [--scrape_interval 1.0] [--off_first] [--out FILE.json]

Starts two servers from the same binary, model and intra-op thread count: one with metrics on (its own
loopback /metrics port, scraped every --scrape_interval seconds by a thread here, as Prometheus would, but
more often) and one with --metrics_address= (metrics off: the engine gets no Metrics and records nothing).
Each round scores the same held-out text (the first --bytes of a test-split book) in a fresh session on
each server, in alternating order, so the machine's drift (a shared machine) falls on both alike. Reports
tokens/s per round and the medians, and the ratio on/off; also tokens per second of the server's own CPU
time (user + system, all threads, scrapes included), which a busy shared machine disturbs far less than
wall time. --off_first starts the metrics-off server first
(run both ways to see any bias from process start order). Also checks that the metrics-on server's
brt_scored_tokens_total grew by exactly the tokens scored.
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "model"))

from conftest import STUBS, BrtServer, corpus_docs, score  # noqa: E402

pb = STUBS.pb


def scrape(server):
    """{sample name with labels: value} of one /metrics scrape."""
    with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as r:
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in r.read().decode().splitlines() if line and not line.startswith("#")}


def scored_tokens_total(server):
    return scrape(server)["brt_scored_tokens_total"]


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads (executor, gRPC, exposer)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def score_once(server, text):
    """(tokens, wall seconds, server CPU seconds) of one Score call over `text` in a fresh session."""
    sid = server.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
    chunks = [text[i:i + 16384] for i in range(0, len(text), 16384)]
    c0 = cpu_seconds(server.proc.pid)
    t0 = time.perf_counter()
    _, summary = score(server.stub, sid, chunks, omit_tokens=True)
    dt = time.perf_counter() - t0
    cpu = cpu_seconds(server.proc.pid) - c0
    server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=30)
    return summary.tokens, dt, cpu


def main():
    default_model = os.path.join(ROOT, "model", "artifacts")
    if not os.path.exists(os.path.join(default_model, "brt.pt")):
        default_model = os.path.join(ROOT, "tests", "data", "tiny")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", default=default_model)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--bytes", type=int, default=20000)
    ap.add_argument("--book", default="kjv/Acts")
    ap.add_argument("--scrape_interval", type=float, default=1.0, help="0 = no scraping")
    ap.add_argument("--off_first", action="store_true", help="start the metrics-off server first")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    docs = {d["name"]: d["text"] for d in corpus_docs("test")}
    text = docs[args.book].encode()[:args.bytes]
    text = text[:text.rfind(b"\n") + 1]

    if args.off_first:
        off = BrtServer("--metrics_address=", model_dir=args.model_dir, threads=args.threads)
        on = BrtServer(model_dir=args.model_dir, threads=args.threads)
    else:
        on = BrtServer(model_dir=args.model_dir, threads=args.threads)
        off = BrtServer("--metrics_address=", model_dir=args.model_dir, threads=args.threads)
    stop = threading.Event()
    scrapes = [0]

    def scraper():
        while not stop.wait(args.scrape_interval):
            with urllib.request.urlopen(f"http://{on.metrics_address}/metrics", timeout=10) as r:
                r.read()
            scrapes[0] += 1

    th = threading.Thread(target=scraper, daemon=True)
    try:
        assert off.metrics_address is None
        for s in (on, off):  # warm-up: first-call allocations, caches
            score_once(s, text[:4096])
        if args.scrape_interval > 0:
            th.start()
        counter0 = scored_tokens_total(on)
        rates = {"on": [], "off": []}
        cpu_rates = {"on": [], "off": []}
        tokens_on = 0
        for r in range(args.rounds):
            order = [("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]
            for name, s in order:
                n, dt, cpu = score_once(s, text)
                rates[name].append(n / dt)
                cpu_rates[name].append(n / cpu)
                if name == "on":
                    tokens_on += n
            print(f"round {r}: on {rates['on'][-1]:.0f} tok/s ({cpu_rates['on'][-1]:.0f}/CPU-s), "
                  f"off {rates['off'][-1]:.0f} tok/s ({cpu_rates['off'][-1]:.0f}/CPU-s), {n} tokens", flush=True)
        counter_delta = scored_tokens_total(on) - counter0
        # The executor's own view: mean model-step time and rows by kind (what the per-step metric calls,
        # ~0.1 us of CPU each per benchmarks/metrics_bench.cc, are to be compared with).
        final = scrape(on)
        steps = {}
        for kind in ("score_block", "decode"):
            count = final.get(f'brt_executor_step_duration_seconds_count{{kind="{kind}"}}', 0)
            if count:
                steps[kind] = {
                    "calls": count,
                    "mean_step_s": final[f'brt_executor_step_duration_seconds_sum{{kind="{kind}"}}'] / count,
                    "mean_rows": final[f'brt_executor_batch_rows_sum{{kind="{kind}"}}'] / count}
    finally:
        stop.set()
        on.stop()
        off.stop()

    med_on, med_off = statistics.median(rates["on"]), statistics.median(rates["off"])
    pair = [a / b for a, b in zip(rates["on"], rates["off"])]
    cpu_on, cpu_off = statistics.median(cpu_rates["on"]), statistics.median(cpu_rates["off"])
    result = {
        "model_dir": os.path.relpath(args.model_dir, ROOT),
        "threads": args.threads,
        "rounds": args.rounds,
        "text": f"{args.book}, first {len(text)} bytes, {n} tokens",
        "started_first": "off" if args.off_first else "on",
        "scrape_interval_s": args.scrape_interval,
        "scrapes": scrapes[0],
        "tokens_per_s_on": rates["on"],
        "tokens_per_s_off": rates["off"],
        "median_on": med_on,
        "median_off": med_off,
        "ratio_on_off_of_medians": med_on / med_off,
        "ratio_on_off_per_round_median": statistics.median(pair),
        "tokens_per_cpu_s_on": cpu_rates["on"],
        "tokens_per_cpu_s_off": cpu_rates["off"],
        "median_per_cpu_s_on": cpu_on,
        "median_per_cpu_s_off": cpu_off,
        "ratio_on_off_per_cpu_s": cpu_on / cpu_off,
        "executor_steps_on": steps,
        "scored_counter_delta": counter_delta,
        "scored_tokens_on": tokens_on,
    }
    print(json.dumps(result, indent=2))
    if counter_delta != tokens_on:
        print(f"MISMATCH: brt_scored_tokens_total grew by {counter_delta}, scored {tokens_on}", file=sys.stderr)
        return 1
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
