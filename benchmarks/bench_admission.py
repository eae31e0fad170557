#!/usr/bin/env python3
"""Admission under overload: twice the queue's capacity of concurrent callers (issue 10).

Reproduce (about three minutes on 2 idle cores; refuses to start when the 1-minute load is above 0.7):

  /usr/bin/python3 benchmarks/bench_admission.py --threads 2 --out benchmarks/results/admission.json

One brt-server with --max_queue=Q (default 8) and no per-client limit (--max_calls_per_peer=0: every caller
here shares one address). Each caller owns a session and loops Score calls of the same ~1 KB of held-out
text (about 250 tokens a call), measuring each call from its start to its summary (or to its refusal).
Two loads, alternating, --rounds times, --seconds each:

  at capacity  Q callers: every call is admitted; the latency of a call on a server working at its limit
               ("unloaded": nothing is refused);
  2x capacity  2Q callers: Q calls run, the others are refused (UNAVAILABLE, "the queue is full"). A refused
               caller retries after --retry_ms (a client's backoff; without one, refusals alone would keep
               both cores busy in this single-machine setup, where the client shares the CPU).

The issue asks: refusals in under 50 ms, and the admitted calls' p99 at 2x capacity within 1.5x of their
p99 at capacity. Reported: each round's p50/p99 of admitted calls, p50/p99/max of the time to a refusal,
calls and refusals per second; the medians over rounds; and the ratio of the medians.
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import LOAD_LIMIT, check_load, percentile  # noqa: E402


def held_out_text(corpus_docs, size):
    for d in corpus_docs("test"):
        if d["name"] == "kjv/Acts":
            text = d["text"].encode()
            cut = text.rfind(b"\n", 0, size) + 1
            return text[:cut]
    raise SystemExit("kjv/Acts is not in the test split (run model/build_corpus.py)")


def run_load(server, pb, grpc, sessions, text, seconds, retry_s):
    """len(sessions) callers loop Score calls for `seconds`; returns admitted latencies, refusal times and
    any other errors."""
    admitted, refused, errors = [], [], []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def caller(sid):
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                got = False
                for r in server.stub.Score(iter([pb.ScoreRequest(session_id=sid, omit_tokens=True, text=text)]),
                                           timeout=120):
                    got = got or r.HasField("summary")
                dt = time.perf_counter() - t0
                with lock:
                    (admitted if got else errors).append(dt if got else "no summary")
            except grpc.RpcError as e:
                dt = time.perf_counter() - t0
                with lock:
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        refused.append(dt)
                    else:
                        errors.append(f"{e.code().name}: {e.details()}")
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    time.sleep(retry_s)

    threads = [threading.Thread(target=caller, args=(sid,)) for sid in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted, refused, errors


def summarize(admitted, refused, seconds):
    return {"admitted": len(admitted), "refused": len(refused),
            "admitted_per_s": len(admitted) / seconds, "refused_per_s": len(refused) / seconds,
            "admitted_p50_ms": percentile(admitted, 50) * 1e3, "admitted_p99_ms": percentile(admitted, 99) * 1e3,
            "refusal_p50_ms": percentile(refused, 50) * 1e3 if refused else None,
            "refusal_p99_ms": percentile(refused, 99) * 1e3 if refused else None,
            "refusal_max_ms": max(refused) * 1e3 if refused else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queue", type=int, default=8, help="--max_queue of the server (Q)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--retry_ms", type=float, default=50.0)
    ap.add_argument("--text_bytes", type=int, default=1024)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "admission.json"))
    ap.add_argument("--force", action="store_true", help=f"run even if the 1-minute load is above {LOAD_LIMIT}")
    args = ap.parse_args()
    command = "/usr/bin/python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    load_before = check_load(args.force)
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    import grpc
    from conftest import STUBS, BrtServer, corpus_docs
    pb = STUBS.pb
    text = held_out_text(corpus_docs, args.text_bytes)
    q = args.queue
    server = BrtServer(f"--max_queue={q}", "--max_calls_per_peer=0", f"--max_sessions={4 * q + 8}",
                       threads=args.threads)
    result = {"command": command, "machine": platform.node(), "threads": args.threads, "queue": q,
              "seconds": args.seconds, "retry_ms": args.retry_ms, "text_bytes": len(text),
              "load_before": load_before, "rounds": []}
    try:
        sessions = [server.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id for _ in range(2 * q)]
        run_load(server, pb, grpc, sessions[:q], text, 3.0, args.retry_ms / 1e3)  # warm-up, untimed
        for r in range(args.rounds):
            row = {}
            for name, callers in (("capacity", sessions[:q]), ("overload", sessions)):
                admitted, refused, errors = run_load(server, pb, grpc, callers, text, args.seconds,
                                                     args.retry_ms / 1e3)
                if errors:
                    raise SystemExit(f"round {r} {name}: unexpected errors: {errors[:5]}")
                row[name] = summarize(admitted, refused, args.seconds)
                print(f"round {r} {name:8s} {json.dumps(row[name])}", file=sys.stderr, flush=True)
            result["rounds"].append(row)
    finally:
        server.stop()
    med = lambda load, key: statistics.median(x[load][key] for x in result["rounds"])  # noqa: E731
    result["median"] = {load: {k: med(load, k) for k in result["rounds"][0][load]
                               if result["rounds"][0][load][k] is not None}
                        for load in ("capacity", "overload")}
    m = result["median"]
    result["p99_ratio"] = m["overload"]["admitted_p99_ms"] / m["capacity"]["admitted_p99_ms"]
    result["load_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"| load | callers | admitted calls/s | admitted p50 | admitted p99 | refusals/s | refusal p50 | "
          f"refusal p99 | refusal max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for load, callers in (("capacity", q), ("overload", 2 * q)):
        x = m[load]
        ref = (f"{x['refused_per_s']:.1f} | {x['refusal_p50_ms']:.1f} ms | {x['refusal_p99_ms']:.1f} ms | "
               f"{x['refusal_max_ms']:.1f} ms" if "refusal_p50_ms" in x else "0 | - | - | -")
        print(f"| {load} | {callers} | {x['admitted_per_s']:.2f} | {x['admitted_p50_ms']:.0f} ms | "
              f"{x['admitted_p99_ms']:.0f} ms | {ref} |")
    print(f"\nadmitted p99 at 2x capacity / at capacity: {result['p99_ratio']:.2f} (the issue asks <= 1.5); "
          f"load {load_before[0]:.2f} before, {result['load_after'][0]:.2f} after")


if __name__ == "__main__":
    main()
