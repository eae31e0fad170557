#!/usr/bin/env python3
"""Server benchmarks, each a ratio measured side by side in one run on this machine.

  /usr/bin/python3 benchmarks/bench_server.py [--threads 2] [--out benchmarks/results/server.json]

1. Scoring throughput: brt-server's Score RPC against the eager Python reference scorer, same model, same
   text, same intra-op thread count.
2. Batching: aggregate scoring tokens/s of 8 concurrent sessions against 1 session.
3. Generation: tokens/s per session and inter-token latency (p50/p95/max) for 1 and for 8 concurrent
   sessions (greedy, the prompt consumed first).
4. Memory per session against document length: the session's reported state bytes and the server's
   resident memory after scoring growing prefixes of one long document (both must stay flat).
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "model"))

from conftest import STUBS, BrtServer, corpus_docs, score  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import chunks_of, rss_bytes  # noqa: E402

pb = STUBS.pb


def bench_score_vs_reference(server, text, threads):
    import torch
    from brt.reference import load_eager, score_tokens
    from brt.tokenizer import Tokenizer
    torch.set_num_threads(threads)
    model, _ = load_eager(os.path.join(ROOT, "model", "artifacts", "brt.pt"))
    tok = Tokenizer(os.path.join(ROOT, "model", "artifacts", "tokenizer.model"))
    ids = [tok.bos_id] + tok.encode_bytes(text)
    out = {}
    # Alternate server and reference twice to spread the machine's noise over both.
    server_rates, ref_rates = [], []
    for _ in range(2):
        sid = server.stub.CreateSession(pb.CreateSessionRequest(), timeout=10).id
        t0 = time.perf_counter()
        _, summary = score(server.stub, sid, chunks_of(text), omit_tokens=True)
        server_rates.append(summary.tokens / (time.perf_counter() - t0))
        server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=10)
        t0 = time.perf_counter()
        nll = score_tokens(model, ids)
        ref_rates.append(len(nll) / (time.perf_counter() - t0))
    out["tokens"] = len(ids) - 1
    out["server_tokens_per_s"] = round(max(server_rates), 1)
    out["reference_tokens_per_s"] = round(max(ref_rates), 1)
    out["server_over_reference"] = round(max(server_rates) / max(ref_rates), 2)
    return out


def bench_batching(server, texts):
    def run(datas):
        results = [None] * len(datas)
        sids = [server.stub.CreateSession(pb.CreateSessionRequest(), timeout=10).id for _ in datas]
        barrier = threading.Barrier(len(datas) + 1)

        def one(i):
            barrier.wait()
            results[i] = score(server.stub, sids[i], chunks_of(datas[i]), omit_tokens=True)[1].tokens

        ths = [threading.Thread(target=one, args=(i,)) for i in range(len(datas))]
        for t in ths:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ths:
            t.join()
        dt = time.perf_counter() - t0
        for s in sids:
            server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s), timeout=10)
        return sum(results) / dt

    one_rate = run(texts[:1])
    eight_rate = run(texts[:8])
    info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).executor
    return {"batch1_tokens_per_s": round(one_rate, 1),
            "batch8_tokens_per_s": round(eight_rate, 1), "batch8_over_batch1": round(eight_rate / one_rate, 2),
            "max_score_batch_seen": info.max_score_batch}


def bench_generation(server, n_sessions, max_tokens):
    prompt = b"And it came to pass after these things, that the king"
    per = [None] * n_sessions
    sids = [server.stub.CreateSession(pb.CreateSessionRequest(), timeout=10).id for _ in range(n_sessions)]
    barrier = threading.Barrier(n_sessions)

    def one(i):
        req = pb.GenerateRequest(session_id=sids[i], prompt=prompt, max_tokens=max_tokens,
                                 sampling=pb.SamplingParams(temperature=0.0))
        barrier.wait()
        t0 = time.perf_counter()
        stamps = []
        for msg in server.stub.Generate(req, timeout=600):
            if msg.finish_reason == pb.FINISH_REASON_UNSPECIFIED:
                stamps.append(time.perf_counter())
        per[i] = (t0, stamps)

    ths = [threading.Thread(target=one, args=(i,)) for i in range(n_sessions)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    gaps, rates, ttft = [], [], []
    for t0, stamps in per:
        ttft.append(stamps[0] - t0)
        gaps += [b - a for a, b in zip(stamps, stamps[1:])]
        rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    for s in sids:
        server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s), timeout=10)
    gaps.sort()
    return {"sessions": n_sessions, "tokens_each": max_tokens,
            "tokens_per_s_per_session": round(statistics.mean(rates), 1),
            "tokens_per_s_total": round(sum(rates), 1),
            "time_to_first_token_ms_p50": round(1000 * statistics.median(ttft), 2),
            "inter_token_ms_p50": round(1000 * gaps[len(gaps) // 2], 2),
            "inter_token_ms_p95": round(1000 * gaps[int(len(gaps) * 0.95)], 2),
            "inter_token_ms_max": round(1000 * gaps[-1], 2)}


def bench_memory(server, book):
    sid = server.stub.CreateSession(pb.CreateSessionRequest(), timeout=10).id
    rows = []
    sent = 0
    for target in [len(book) // 64, len(book) // 16, len(book) // 4, len(book)]:
        part = book[sent:target]
        part = part[:part.rfind(b"\n") + 1]
        score(server.stub, sid, chunks_of(part), omit_tokens=True)
        sent += len(part)
        s = server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
        rows.append({"tokens": s.tokens_consumed, "state_bytes": s.state_bytes,
                     "server_rss_bytes": rss_bytes(server.proc.pid)})
    server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=10)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "server.json"))
    args = ap.parse_args()
    docs = {d["name"]: d["text"].encode() for d in corpus_docs("test")}
    book = docs["kjv/Eze"]
    texts = [docs["kjv/Acts"][i * 20000:(i + 1) * 20000] for i in range(4)] + \
        [docs["kjv/Eze"][i * 20000:(i + 1) * 20000] for i in range(4)]
    server = BrtServer(threads=args.threads)
    try:
        res = {"machine": f"{os.cpu_count()} cores", "threads": args.threads}
        res["score_vs_reference"] = bench_score_vs_reference(server, docs["kjv/Acts"][:60000], args.threads)
        print(json.dumps(res["score_vs_reference"]), flush=True)
        res["score_batching"] = bench_batching(server, texts)
        print(json.dumps(res["score_batching"]), flush=True)
        res["generation"] = [bench_generation(server, n, args.gen_tokens) for n in (1, 8)]
        print(json.dumps(res["generation"]), flush=True)
        res["memory"] = bench_memory(server, book)
        print(json.dumps(res["memory"]), flush=True)
    finally:
        server.stop()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
