#!/usr/bin/env python3
"""A whole held-out book's prompt logprobs over HTTP (`echo`, streamed) against gRPC's Score, with the server's
memory: the number every OpenAI-compatible evaluation needs, for a book, in constant memory.

Reproduce (a few minutes on 2 idle cores):

  /usr/bin/python3 benchmarks/bench_http_book.py --threads 2 --out benchmarks/results/http_book.json

One server (--http_listen, the prefix cache off so that nothing is kept on purpose). The held-out novel of
model/data (the test split's Austen document), whole: gRPC Score (top_k=1) once, then POST /v1/completions
with echo, max_tokens 0, logprobs 1, stream true, --rounds times. Checked: every token's logprob and its top
alternative equal gRPC's. Recorded: wall time of each, tokens/s, and the server's resident memory (VmRSS) and
peak (VmHWM) before, after each round, and sampled every 0.2 s during the streams.
"""
import argparse
import json
import os
import platform
import shlex
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import LOAD_LIMIT, check_load, chunks_of  # noqa: E402


def proc_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=0, help="only the first N bytes (0 = the whole book)")
    ap.add_argument("--http_threads", type=int, default=16, help="the server's --http_threads")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "http_book.json"))
    ap.add_argument("--force", action="store_true", help=f"run even if the 1-minute load is above {LOAD_LIMIT}")
    args = ap.parse_args()
    command = "/usr/bin/python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    load_before = check_load(args.force)
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    from conftest import STUBS, BrtServer, corpus_docs, free_port, score
    from http_util import Http
    pb = STUBS.pb
    book = next(d for d in corpus_docs("test") if d["name"].startswith("austen/"))
    text = book["text"] if not args.bytes else book["text"][:args.bytes]
    port = free_port()
    s = BrtServer(f"--http_listen=127.0.0.1:{port}", "--http_prefix_cache_bytes=0",
                  f"--http_threads={args.http_threads}",
                  f"--http_max_body_bytes={4 * len(text.encode()) + (1 << 20)}", threads=args.threads)
    http = Http(port, timeout=3600)
    out = {"command": command, "machine": platform.node(), "book": book["name"], "bytes": len(text.encode()),
           "load_before": load_before, "rounds": []}
    try:
        pid = s.proc.pid
        out["rss_kb_start"] = proc_kb(pid, "VmRSS:")
        sid = s.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
        t0 = time.perf_counter()
        toks, summary = score(s.stub, sid, chunks_of(text.encode()), top_k=1, timeout=3600)
        out["grpc_s"] = time.perf_counter() - t0
        out["tokens"] = len(toks)
        out["bits_per_token"] = summary.bits_per_token
        out["bits_per_byte"] = summary.bits_per_byte
        s.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=30)
        want = [-t.nll for t in toks]
        want_top = [t.top[0].logprob for t in toks]
        out["rss_kb_after_grpc"] = proc_kb(pid, "VmRSS:")
        for r in range(args.rounds):
            samples, stop = [], threading.Event()

            def sample():
                while not stop.is_set():
                    samples.append(proc_kb(pid, "VmRSS:"))
                    time.sleep(0.2)

            th = threading.Thread(target=sample)
            th.start()
            got, top = [], []
            t0 = time.perf_counter()
            for e in http.stream({"prompt": text, "echo": True, "max_tokens": 0, "logprobs": 1}):
                lp = e["choices"][0]["logprobs"] if e["choices"] else None
                if lp:
                    got.extend(lp["token_logprobs"])
                    top.extend(next(iter(d.values())) for d in lp["top_logprobs"])
            took = time.perf_counter() - t0
            stop.set()
            th.join()
            assert got == want, "HTTP echo logprobs differ from gRPC Score"
            assert top == want_top, "HTTP top_logprobs differ from gRPC Score"
            out["rounds"].append({"http_s": took, "tokens_per_s": len(got) / took, "rss_kb_max": max(samples),
                                  "rss_kb_min": min(samples), "rss_kb_end": proc_kb(pid, "VmRSS:"),
                                  "hwm_kb_end": proc_kb(pid, "VmHWM:")})
            print(f"round {r}: {took:.1f} s, {len(got) / took:.0f} tokens/s, RSS max {max(samples) // 1024} MB",
                  file=sys.stderr, flush=True)
    finally:
        s.stop()
    out["load_after"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "rounds"}, indent=1))
    for r in out["rounds"]:
        print(r)


if __name__ == "__main__":
    main()
