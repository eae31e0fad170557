#!/usr/bin/env python3
"""Rewinding a long document, and reusing a long prompt prefix, against reading the text again.

Reproduce (about five minutes on 2 idle cores; refuses to start when the 1-minute load is above 0.7):

  /usr/bin/python3 benchmarks/bench_rewind.py --threads 2 --out benchmarks/results/rewind.json

A. Rewind (gRPC). For each context length C in 4k, 32k, 128k tokens, one session reads C tokens of corpus text
   (whole lines; untimed). The edit: go back to the start of the line that begins about 100 tokens before the
   end (as when a user rewrites the last sentence). Timed, alternating, --rounds times each:
     rewind   ForkSession (untimed) then RewindSession(position) on the fork: the server restores its newest
              checkpoint at or before the position and re-reads the tokens after it;
     re-read  a fresh session reads the whole prefix (Score, omit_tokens), which is what a server without
              rewinding must do.
   Both end in the same state (the rewind is bitwise that session's memory; tests/integration/test_rewind.py).
   The server runs with its defaults (--checkpoints_per_session=4, --checkpoint_interval_blocks=2).

B. Prefix cache (HTTP). lm-evaluation-harness's loglikelihood pattern: one context of L tokens (4k, 32k) and 5
   continuations of 20 tokens, one POST /v1/completions each (token ids, echo, logprobs=1, max_tokens=1,
   temperature 0), against two servers side by side: --http_prefix_cache_bytes=256 MiB (default) and 0 (off).
   The answers are compared for equality. Per context: the 5 requests' total time, with the cache and without,
   alternating, --rounds times; the first request of each set fills the cache (a miss), the others hit it.

Medians over rounds. Writes every raw number to the JSON and a Markdown table to stdout.
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import LOAD_LIMIT, check_load, chunks_of  # noqa: E402


def corpus_lines(corpus_docs, tok, need_tokens):
    """Whole lines of held-out, validation and training text with their token counts, until need_tokens."""
    lines, total = [], 0
    for split in ("test", "valid", "train"):
        try:
            docs = corpus_docs(split)
        except Exception:  # noqa: BLE001 (a split may be missing)
            continue
        for d in sorted(docs, key=lambda d: -len(d["text"])):
            for ln in d["text"].encode().split(b"\n"):
                ln += b"\n"
                n = len(tok.encode_bytes(ln))
                lines.append((ln, n))
                total += n
                if total >= need_tokens:
                    return lines
    raise SystemExit(f"the corpus has fewer than {need_tokens} tokens")


def text_of(lines, tokens):
    """Whole lines with about `tokens` tokens, and the byte offset and token count of the line that starts
    about 100 tokens before the end."""
    out, n = [], 0
    for ln, k in lines:
        if n + k > tokens:
            break
        out.append((ln, k))
        n += k
    cut_bytes, cut_tokens, acc_b, acc_t = 0, 0, 0, 0
    for ln, k in out:
        if acc_t > n - 100:
            break
        cut_bytes, cut_tokens = acc_b, acc_t
        acc_b += len(ln)
        acc_t += k
    return b"".join(ln for ln, _ in out), n, cut_bytes, cut_tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "rewind.json"))
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run with small sizes")
    ap.add_argument("--force", action="store_true", help=f"run even if the 1-minute load is above {LOAD_LIMIT}")
    args = ap.parse_args()
    command = "/usr/bin/python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    load_before = check_load(args.force)
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    sys.path.insert(0, os.path.join(ROOT, "model"))
    from conftest import STUBS, BrtServer, corpus_docs, free_port, score
    from http_util import Http
    from brt.tokenizer import Tokenizer
    pb = STUBS.pb
    tok = Tokenizer(os.path.join(ROOT, "model", "artifacts", "tokenizer.model"))
    sizes = [1024, 4096] if args.quick else [4096, 32768, 131072]
    prefix_sizes = [1024] if args.quick else [4096, 32768]
    lines = corpus_lines(corpus_docs, tok, max(sizes) + 200)

    result = {"command": command, "machine": platform.node(), "threads": args.threads, "rounds": args.rounds,
              "load_before": load_before, "rewind": {}, "prefix_cache": {}}
    port_on, port_off = free_port(), free_port()
    on = BrtServer(f"--http_listen=127.0.0.1:{port_on}", "--http_max_body_bytes=67108864", threads=args.threads)
    off = BrtServer(f"--http_listen=127.0.0.1:{port_off}", "--http_prefix_cache_bytes=0",
                    "--http_max_body_bytes=67108864", threads=args.threads)
    try:
        # ---- A. rewind vs re-read ----
        for c in sizes:
            text, n, cut_bytes, cut_tokens = text_of(lines, c)
            sid = on.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
            score(on.stub, sid, chunks_of(text), omit_tokens=True, timeout=3600)
            s = on.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)
            position = cut_tokens + 1  # BOS at 0: the line's first token
            rewind_s, reread_s, reread_tokens = [], [], []
            for _ in range(args.rounds):
                fork = on.stub.ForkSession(pb.ForkSessionRequest(session_id=sid), timeout=60).id
                t0 = time.perf_counter()
                r = on.stub.RewindSession(pb.RewindSessionRequest(session_id=fork, position=position), timeout=600)
                rewind_s.append(time.perf_counter() - t0)
                assert r.position == position
                on.stub.DeleteSession(pb.DeleteSessionRequest(session_id=fork), timeout=30)
                fresh = on.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
                t0 = time.perf_counter()
                score(on.stub, fresh, chunks_of(text[:cut_bytes]), omit_tokens=True, timeout=3600)
                reread_s.append(time.perf_counter() - t0)
                on.stub.DeleteSession(pb.DeleteSessionRequest(session_id=fresh), timeout=30)
            on.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=30)
            result["rewind"][str(c)] = {
                "context_tokens": n, "position": position, "earliest_rewind_position": s.earliest_rewind_position,
                "rewind_s": rewind_s, "reread_s": reread_s,
                "rewind_median_s": statistics.median(rewind_s), "reread_median_s": statistics.median(reread_s),
                "speedup": statistics.median(reread_s) / statistics.median(rewind_s)}
            print(f"rewind {c}: {result['rewind'][str(c)]['rewind_median_s']*1e3:.1f} ms vs re-read "
                  f"{result['rewind'][str(c)]['reread_median_s']*1e3:.0f} ms", file=sys.stderr, flush=True)

        # ---- B. prefix cache on vs off ----
        h_on, h_off = Http(port_on), Http(port_off)
        for L in prefix_sizes:
            text, n, _, _ = text_of(lines, L + 200)
            ids = h_on.post("/tokenize", {"prompt": text.decode()})[1]["tokens"]
            ctx = ids[:L]
            conts = [ids[L + 20 * i: L + 20 * (i + 1)] for i in range(5)]
            times = {"on": [], "off": []}
            cached = []
            for r in range(args.rounds):
                answers = {}
                # A different context each round (its first token changes), so the first request is a miss.
                ctx_r = [(ctx[0] + r) % 4000 + 10 if r else ctx[0]] + ctx[1:]
                for name, h in (("on", h_on), ("off", h_off)) if r % 2 == 0 else (("off", h_off), ("on", h_on)):
                    t0 = time.perf_counter()
                    outs = []
                    for cont in conts:
                        st, o = h.post("/v1/completions", {"prompt": ctx_r + cont, "max_tokens": 1, "temperature": 0,
                                                           "logprobs": 1, "echo": True, "seed": 1234})
                        assert st == 200, o
                        outs.append(o)
                    times[name].append(time.perf_counter() - t0)
                    answers[name] = [o["choices"][0]["logprobs"]["token_logprobs"][:-1] for o in outs]
                    if name == "on":
                        cached.append([o["usage"]["prompt_tokens_details"]["cached_tokens"] for o in outs])
                assert answers["on"] == answers["off"], "the prefix cache changed a number"
            result["prefix_cache"][str(L)] = {
                "context_tokens": L, "continuations": 5, "continuation_tokens": 20, "on_s": times["on"],
                "off_s": times["off"], "cached_tokens": cached,
                "on_median_s": statistics.median(times["on"]), "off_median_s": statistics.median(times["off"]),
                "speedup": statistics.median(times["off"]) / statistics.median(times["on"])}
            print(f"prefix {L}: {result['prefix_cache'][str(L)]['speedup']:.2f}x", file=sys.stderr, flush=True)
    finally:
        on.stop()
        off.stop()
    result["load_after"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("| context | rewind (median) | re-read the prefix (median) | speed-up |\n| --- | --- | --- | --- |")
    for c, r in result["rewind"].items():
        print(f"| {int(c)//1024}k tokens | {r['rewind_median_s']*1e3:.1f} ms | {r['reread_median_s']*1e3:.0f} ms | "
              f"{r['speedup']:.0f}x |")
    print("\n| context | 5 continuations, cache on | cache off | speed-up |\n| --- | --- | --- | --- |")
    for L, r in result["prefix_cache"].items():
        print(f"| {int(L)//1024}k tokens | {r['on_median_s']:.2f} s | {r['off_median_s']:.2f} s | {r['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
