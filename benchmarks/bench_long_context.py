#!/usr/bin/env python3
"""What the Block-Recurrent Transformer buys at long context: per-token cost and memory per session of
brt-server at 1k, 4k, 32k and 256k tokens of context, against a full-attention transformer of the same
size decoding with a growing key/value cache.

Reproduce (a few minutes on 2 idle cores; refuses to start when the 1-minute load is above 0.7):

  /usr/bin/python3 benchmarks/bench_long_context.py --threads 2 --out benchmarks/results/long_context.json

`--quick` is a seconds-long smoke run (context lengths 1k and 4k only, fewer repetitions; its numbers mean
little); `--force` runs even on a loaded machine (the load averages before and after are in the JSON).

brt-server (build/bin/brt-server on loopback, --threads=N, the shipped model model/artifacts/brt.pt):
  One session reads one long token stream through Score (16 KiB chunks, omit_tokens): the held-out test
  documents, then the validation and training documents of model/data, repeated if needed. Before each
  context length C the session is filled (untimed) up to the start of a measurement window of ~3k tokens
  ending at C (the window starts at the previous length when that is closer: 1k -> [0,1k), 4k -> [1k,4k)).
  The window is one Score call of whole lines, padded with newline tokens (always one token each) so that it
  starts and ends on a block boundary: it runs whole blocks only, like the baseline below. Every window is
  the SAME text (the opening lines of the held-out documents; at 1k, where less fits, a prefix of it): the
  server's cost per token can depend on the text too (bytes per token, lines per call, on a machine whose
  two cores also tokenize), so windows of different text, as earlier versions of this script used (4k: Bible
  verses, 256k: a novel), could read that difference as a cost of position. Before the window
  the session is brought to a block boundary with a short untimed call of newlines; a fork of the session is
  parked there, and the session reads the window (untimed) to go on. After the stream, --reps timed rounds
  each score every length's window in a fresh fork of its parked session, the lengths in alternating order
  from round to round, so that the machine's drift over minutes (this VM's speed moves by a fifth) is not read
  as a cost of position; the median time / tokens is the per-token cost AT that context. Recorded at each C:
  the session's state_bytes (GetSession) and the server's resident memory (VmRSS of /proc/PID/status).
  The server figure is end to end (client gRPC, tokenization, scheduling, the model).

The script's own process (the bare BRT and the baseline) runs under the malloc settings brt-server gives
itself (bench_util.use_server_allocator): large temporaries stay in the heap.

BRT bare model (an extra, for a like-for-like ratio): the same export in-process (torch.jit.load); one block
of W tokens per score_slots call (format 2) with the session's ring at start position C, or score_blocks
(format 1), 3 calls per length in each timed round above; per-token cost = median call time / W.

Full-attention baseline (eager PyTorch, defined in this file): L=4, D=256, 4 heads, d_ff from the shipped
config (brt_meta.json), vocab 4096, random weights, pre-norm RMSNorm, ReLU FFN, tied embeddings, no position
encoding (it would cost nothing measurable at this size). Batch 1: a block of 64 tokens is processed at once,
causally, against a KV cache that already holds N tokens (filled with random keys/values directly, not
computed), its keys/values written into the cache in place, logits and log-softmax computed for all 64.
Per-token cost = median block time / 64. KV-cache bytes per session = 2*L*N*D*4. A length whose cache and
attention buffers would not fit in the memory limit (--baseline-mem-fraction of MemAvailable), or whose
estimated time exceeds --baseline-max-s, is skipped and marked so in the output (no numbers invented).

Report: per-token cost at each length for both, baseline/BRT per length, BRT cost at 256k / at 4k, bytes per
session for both; a Markdown table on stdout and every raw number in the JSON.
"""
import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import (LOAD_LIMIT, check_load, chunks_of, omp_threads, pack_like_server, rss_bytes,  # noqa: E402
                        use_server_allocator)
MODEL_PATH = os.path.join(ROOT, "model", "artifacts", "brt.pt")
TOKENIZER_PATH = os.path.join(ROOT, "model", "artifacts", "tokenizer.model")
WINDOW_TOKENS = 3072  # tokens from a window's start to C (the window's text is at most this minus 2 blocks)


def mem_available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def label(n):
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


# ---- the token stream -------------------------------------------------------------------------------------
class LineStream:
    """Whole lines of corpus text with their token counts (the tokenizer never merges across a newline, so
    the tokens of concatenated lines are the concatenation of their tokens)."""

    def __init__(self, tok, docs_in_order, need_tokens):
        nl = tok.encode_bytes(b"\n")
        assert len(nl) == 1, "the newline must be one token"
        self.nl_id = nl[0]
        self.lines = []  # (bytes, tokens)
        self.sources = []
        total, rep = 0, 0
        while total < need_tokens:
            for name, text in docs_in_order:
                data = text.encode("utf-8")
                if not data.endswith(b"\n"):
                    data += b"\n"
                ids = tok.encode_bytes(data)
                self.sources.append(name if rep == 0 else f"{name} (repeat {rep})")
                start_b, count = 0, 0
                for t in ids:
                    count += 1
                    if t == self.nl_id:
                        end_b = data.index(b"\n", start_b) + 1
                        self.lines.append((data[start_b:end_b], count))
                        total += count
                        start_b, count = end_b, 0
                if total >= need_tokens:
                    break
            rep += 1
        self.cursor = 0

    def take(self, n_tokens):
        """Whole lines from the cursor with at most n_tokens tokens (at least one line)."""
        parts, count = [], 0
        while self.cursor < len(self.lines):
            data, c = self.lines[self.cursor]
            if parts and count + c > n_tokens:
                break
            parts.append(data)
            count += c
            self.cursor += 1
        return b"".join(parts), count


# ---- the full-attention baseline -------------------------------------------------------------------------------
def make_baseline(L, D, H, d_ff, V):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = RMSNorm(D), RMSNorm(D)
            self.wq, self.wk = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
            self.wv, self.wo = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
            self.w1, self.w2 = nn.Linear(D, d_ff, bias=False), nn.Linear(d_ff, D, bias=False)

        def forward(self, x, cache_k, cache_v, n):
            """x (1,T,D); cache_k/v (1,H,cap,dh) holding n tokens; writes this block's keys/values at n..n+T."""
            B, T, _ = x.shape
            dh = D // H
            xn = self.norm1(x)
            q = self.wq(xn).view(B, T, H, dh).transpose(1, 2)
            k = self.wk(xn).view(B, T, H, dh).transpose(1, 2)
            v = self.wv(xn).view(B, T, H, dh).transpose(1, 2)
            cache_k[:, :, n:n + T] = k
            cache_v[:, :, n:n + T] = v
            keys, values = cache_k[:, :, :n + T], cache_v[:, :, :n + T]
            logits = torch.matmul(q, keys.transpose(-1, -2)) * (1.0 / math.sqrt(dh))  # (1,H,T,n+T)
            # Causal inside the block: query i (position n+i) sees keys 0..n+i.
            causal = torch.ones(T, T, dtype=torch.bool).triu(1)
            logits[..., n:] = logits[..., n:].masked_fill(causal, float("-inf"))
            att = torch.matmul(torch.softmax(logits, dim=-1), values)
            y = x + self.wo(att.transpose(1, 2).reshape(B, T, D))
            return y + self.w2(F.relu(self.w1(self.norm2(y))))

    class FullAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.layers = nn.ModuleList([Layer() for _ in range(L)])
            self.final_norm = RMSNorm(D)

        def forward(self, tokens, caches_k, caches_v, n):
            x = self.embed(tokens)
            for layer, ck, cv in zip(self.layers, caches_k, caches_v):
                x = layer(x, ck, cv, n)
            logits = torch.matmul(self.final_norm(x), self.embed.weight.t()) * (1.0 / math.sqrt(D))
            return torch.log_softmax(logits, dim=-1)

    torch.manual_seed(0)
    return FullAttention().eval()


def measure_baseline(model, L, D, H, n_ctx, block, reps, V):
    """Median seconds of one causal block of `block` tokens against a cache already holding n_ctx tokens."""
    import torch
    dh = D // H
    cap = n_ctx + block
    caches_k = [torch.empty(1, H, cap, dh).normal_() for _ in range(L)]
    caches_v = [torch.empty(1, H, cap, dh).normal_() for _ in range(L)]
    tokens = torch.randint(0, V, (1, block))
    times = []
    with torch.no_grad():
        model(tokens, caches_k, caches_v, n_ctx)  # warm-up (first-touch of the buffers, allocator)
        for _ in range(reps):
            t0 = time.perf_counter()
            model(tokens, caches_k, caches_v, n_ctx)
            times.append(time.perf_counter() - t0)
    del caches_k, caches_v
    return times


# ---- the BRT bare model in-process ---------------------------------------------------------------------------
def measure_brt_bare(module, meta, n_ctx, reps, tokens_row, packed):
    """Median seconds of one block through the export, the session's memory at start position n_ctx."""
    import torch
    W = int(meta["window"])
    toks = torch.tensor([tokens_row[:W]], dtype=torch.long)
    times = []
    with torch.no_grad(), omp_threads(1 if packed else torch.get_num_threads()):
        if int(meta.get("format", 1)) >= 2:
            L, H, dh = int(meta["n_layers"]), int(meta["n_heads"]), int(meta["head_dim"])
            R, S, D = int(meta["n_recurrent"]), int(meta["n_state"]), int(meta["d_model"])
            kv = [torch.zeros(1, 2, H, int(c), dh) for c in meta["kv_slots"]][:L]
            state = torch.zeros(1, R, 3, S, D)
            slots = torch.zeros(1, dtype=torch.long)
            module.init_slots(slots, kv, state)
            start = (n_ctx // W) * W
            for i in range(reps + 2):  # two warm-up calls
                starts = torch.tensor([start + i * W], dtype=torch.long)
                t0 = time.perf_counter()
                module.score_slots(toks, starts, slots, kv, state, 0)
                if i >= 2:
                    times.append(time.perf_counter() - t0)
        else:
            kv, state = module.initial_state(1)
            for i in range(reps + 2):
                t0 = time.perf_counter()
                out = module.score_blocks(toks, kv, state, 0)
                if i >= 2:
                    times.append(time.perf_counter() - t0)
                kv, state = out[4], out[5]
    return times


# ---- the server ------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=11, help="window scorings per length (forks + the session)")
    ap.add_argument("--baseline-reps", type=int, default=3)
    ap.add_argument("--baseline-max-s", type=float, default=180.0,
                    help="skip a baseline length whose estimated time (warm-up + reps) exceeds this")
    ap.add_argument("--baseline-mem-fraction", type=float, default=0.5,
                    help="skip a baseline length needing more than this fraction of MemAvailable")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "long_context.json"))
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run: 1k and 4k only")
    ap.add_argument("--force", action="store_true", help=f"run even if the 1-minute load is above {LOAD_LIMIT}")
    args = ap.parse_args()
    command = "/usr/bin/python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    load_before = check_load(args.force)
    use_server_allocator()  # the in-process BRT and the baseline run under the server's malloc settings

    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    sys.path.insert(0, os.path.join(ROOT, "model"))
    import grpc
    import torch
    from conftest import STUBS, BrtServer, corpus_docs, score
    from brt.tokenizer import Tokenizer
    pb = STUBS.pb
    torch.set_num_threads(args.threads)

    lengths = [1024, 4096] if args.quick else [1024, 4096, 32768, 262144]
    reps = min(args.reps, 2) if args.quick else args.reps
    base_reps = min(args.baseline_reps, 2) if args.quick else args.baseline_reps

    files = {"brt_meta.json": ""}
    module = torch.jit.load(MODEL_PATH, map_location="cpu", _extra_files=files)
    module.eval()
    packed = pack_like_server(module)
    meta = json.loads(files["brt_meta.json"])
    cfg = meta.get("config", {})
    W = int(meta["window"])
    L, D, H, V = 4, 256, 4, 4096
    d_ff = int(cfg.get("d_ff", 4 * D))

    tok = Tokenizer(TOKENIZER_PATH)
    docs = []
    for split in ("test", "valid", "train"):
        docs += [(f"{split}:{d['name']}", d["text"]) for d in corpus_docs(split)]
    t0 = time.perf_counter()
    stream = LineStream(tok, docs, lengths[-1] + 2 * WINDOW_TOKENS)
    # The windows' text: the same whole lines at every length (a prefix of them where fewer fit).
    window_lines = LineStream(tok, [d for d in docs if d[0].startswith("test:")], WINDOW_TOKENS)
    window_text, window_n = window_lines.take(WINDOW_TOKENS - 2 * W)

    def window_prefix(room):
        if window_n <= room:
            return window_text, window_n
        window_lines.cursor = 0
        return window_lines.take(room)
    tokenize_s = time.perf_counter() - t0

    baseline = make_baseline(L, D, H, d_ff, V)
    base_params = sum(p.numel() for p in baseline.parameters())
    rng_row = torch.randint(0, int(meta["vocab_size"]), (W,)).tolist()

    rows = []
    parked = []  # (row, parked session id, window chunks)
    server = BrtServer(threads=args.threads)
    try:
        info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        # Warm-up: a throwaway session scores a few blocks (TorchScript profiling runs).
        warm = server.stub.CreateSession(pb.CreateSessionRequest(label="warm-up"), timeout=10).id
        score(server.stub, warm, [b"And it came to pass.\n" * 60], omit_tokens=True)
        server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=warm), timeout=10)

        sid = server.stub.CreateSession(pb.CreateSessionRequest(label="long-context"), timeout=10).id

        def session():
            return server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)

        def align(s):
            """An untimed call of newlines that brings session s to a block boundary; returns tokens sent."""
            off = s.block_offset
            if off == 0:
                return 0
            score(server.stub, s.id, [b"\n" * (W - off)], omit_tokens=True)
            return W - off

        prev = 0
        fill_s = 0.0
        for C in lengths:
            row = {"context_tokens": C}
            w_start = max(prev, C - WINDOW_TOKENS)
            # Untimed fill up to the window's start, then a block boundary.
            s = session()
            if w_start > s.tokens_consumed + W:
                text, n = stream.take(w_start - s.tokens_consumed - W)
                t0 = time.perf_counter()
                score(server.stub, sid, chunks_of(text), omit_tokens=True, timeout=1800)
                fill_s += time.perf_counter() - t0
            row["align_newlines"] = align(session())
            s = session()
            row["window_start_tokens"] = s.tokens_consumed
            # The window: whole lines, padded with newlines to whole blocks (it starts at a boundary).
            text, n = window_prefix(C - s.tokens_consumed - W)
            pad = (-n) % W
            text += b"\n" * pad
            row["window_pad_newlines"] = pad
            chunks = chunks_of(text)
            # Park a fork of the session here (its memory at the window's start), then read the window in
            # the session itself, untimed, so the stream goes on from the window's end. The window is timed
            # later, in forks of the parked one, alternating the lengths round by round (see timed_rounds).
            try:
                park = server.stub.ForkSession(pb.ForkSessionRequest(session_id=sid), timeout=10).id
            except grpc.RpcError as e:
                raise SystemExit(f"ForkSession failed ({e.code().name}: {e.details()}); the benchmark needs it")
            t0 = time.perf_counter()
            _, summ = score(server.stub, sid, chunks, omit_tokens=True)
            fill_s += time.perf_counter() - t0
            s = session()
            row["brt_server"] = {
                "window_tokens": summ.tokens, "window_seconds": [], "window_tokens_each": [],
                "tokens_consumed_after": s.tokens_consumed, "block_offset_after": s.block_offset,
                "window_on_block_boundaries": row["window_start_tokens"] % W == W - 1 and s.block_offset == 0,
                "state_bytes": s.state_bytes, "server_rss_bytes": rss_bytes(server.proc.pid)}
            # (position = tokens_consumed + 1: a block boundary means tokens_consumed % W == W - 1.)
            parked.append((row, park, chunks))
            row["brt_bare"] = {"block_seconds": []}

            # The full-attention baseline with N = C tokens in its cache.
            cache_bytes = 2 * L * C * D * 4
            need = 2 * L * (C + 64) * D * 4 + 4 * H * 64 * (C + 64) * 4  # cache + logits/softmax/mask copies
            avail = mem_available_bytes()
            base = {"n_cached": C, "kv_cache_bytes": cache_bytes, "needed_bytes_estimate": need,
                    "mem_available_bytes": avail}
            est = None
            if rows and rows[-1]["baseline"].get("per_block_s"):
                prevb = rows[-1]["baseline"]
                est = prevb["per_block_s"] * (C + 64) / (prevb["n_cached"] + 64) * (base_reps + 1)
            if need > args.baseline_mem_fraction * avail:
                base["skipped"] = (f"needs ~{need / 1e9:.2f} GB, more than {args.baseline_mem_fraction:.0%} of "
                                   f"MemAvailable {avail / 1e9:.2f} GB")
            elif est is not None and est > args.baseline_max_s:
                base["skipped"] = f"estimated {est:.0f} s > --baseline-max-s {args.baseline_max_s:.0f}"
            else:
                bt = measure_baseline(baseline, L, D, H, C, 64, base_reps, V)
                base.update({"block_seconds": bt, "per_block_s": statistics.median(bt),
                             "per_token_s": statistics.median(bt) / 64})
            row["baseline"] = base
            if "skipped" in base:
                print(f"{label(C)}: baseline SKIPPED ({base['skipped']})", flush=True)
            else:
                print(f"{label(C)}: baseline {1e6 * base['per_token_s']:.1f} us/token, cache {cache_bytes} B",
                      flush=True)
            rows.append(row)
            prev = C
        server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=10)

        # Timed rounds. The machine's speed drifts over minutes (seen: a step of +20% in the middle of one
        # in-process pass, at early and late positions alike), and the fill above reaches the lengths in
        # time order, so measuring each length when it is reached would read that drift as a cost of
        # position. Here every round measures every length, in alternating order, each in a fresh fork of
        # the session parked at it; the bare model likewise, at the same positions, in the same rounds.
        for r in range(reps):
            order = parked if r % 2 == 0 else list(reversed(parked))
            for row, park, chunks in order:
                f = server.stub.ForkSession(pb.ForkSessionRequest(session_id=park), timeout=10).id
                t0 = time.perf_counter()
                _, summ = score(server.stub, f, chunks, omit_tokens=True)
                row["brt_server"]["window_seconds"].append(time.perf_counter() - t0)
                row["brt_server"]["window_tokens_each"].append(summ.tokens)
                server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=f), timeout=10)
                row["brt_bare"]["block_seconds"] += measure_brt_bare(module, meta, row["context_tokens"], 3, rng_row,
                                                                     packed)
        for row, park, _ in parked:
            b = row["brt_server"]
            b["per_token_s"] = statistics.median(t / c for t, c in zip(b["window_seconds"], b["window_tokens_each"]))
            row["brt_bare"]["per_token_s"] = statistics.median(row["brt_bare"]["block_seconds"]) / W
            server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=park), timeout=10)
            print(f"{label(row['context_tokens'])}: brt-server {1e6 * b['per_token_s']:.1f} us/token over "
                  f"{b['window_tokens']} tokens x{len(b['window_seconds'])}, bare "
                  f"{1e6 * row['brt_bare']['per_token_s']:.1f} us/token, state {b['state_bytes']} B, "
                  f"rss {b['server_rss_bytes']} B", flush=True)
        server_info = {"state_bytes_per_session": info.model.state_bytes_per_session, "window": info.model.window,
                       "version": info.version, "device": info.model.device, "dtype": info.model.dtype}
    finally:
        server.stop()
    load_after = os.getloadavg()

    def per_len(C):
        return next(r for r in rows if r["context_tokens"] == C)

    summary = {}
    for r in rows:
        b = r["baseline"].get("per_token_s")
        r["ratio_baseline_over_brt_server"] = b / r["brt_server"]["per_token_s"] if b else None
        r["ratio_baseline_over_brt_bare"] = b / r["brt_bare"]["per_token_s"] if b else None
    if 4096 in lengths and lengths[-1] != 4096:
        summary[f"brt_server_cost_{label(lengths[-1])}_over_4k"] = (
            per_len(lengths[-1])["brt_server"]["per_token_s"] / per_len(4096)["brt_server"]["per_token_s"])
        # The same ratio round by round (both windows timed in the same round, minutes apart at most), then
        # the median: the machine's drift between rounds cancels in each pair.
        last_b, b4 = per_len(lengths[-1])["brt_server"], per_len(4096)["brt_server"]
        pairs = [(t1 / c1) / (t0 / c0) for t1, c1, t0, c0 in zip(last_b["window_seconds"], last_b["window_tokens_each"],
                                                                  b4["window_seconds"], b4["window_tokens_each"])]
        summary[f"brt_server_cost_{label(lengths[-1])}_over_4k_per_round"] = pairs
        summary[f"brt_server_cost_{label(lengths[-1])}_over_4k_median_of_rounds"] = statistics.median(pairs)
        b_last, b_4k = per_len(lengths[-1])["baseline"].get("per_token_s"), per_len(4096)["baseline"].get("per_token_s")
        summary[f"baseline_cost_{label(lengths[-1])}_over_4k"] = b_last / b_4k if b_last and b_4k else None
    if 1024 in lengths and 4096 in lengths:
        summary["brt_server_cost_4k_over_1k"] = (per_len(4096)["brt_server"]["per_token_s"]
                                                 / per_len(1024)["brt_server"]["per_token_s"])

    res = {
        "command": command, "quick": args.quick, "forced": args.force,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "threads": args.threads, "bare_model_packed": packed, "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "lengths": lengths, "window_tokens_target": WINDOW_TOKENS, "window_text_tokens": window_n, "same_window_text": True, "reps": reps, "baseline_reps": base_reps,
        "timed_in_alternating_rounds": True,
        "stream": {"lines": len(stream.lines), "tokens": sum(c for _, c in stream.lines),
                   "sources_first": stream.sources[:5], "documents": len(stream.sources),
                   "tokenize_seconds": tokenize_s, "untimed_fill_seconds": fill_s},
        "model": {k: meta.get(k) for k in ("name", "format", "contract", "parameters", "vocab_size", "d_model",
                                            "n_layers", "n_heads", "window", "n_state", "n_recurrent", "kv_slots")},
        "server": server_info,
        "baseline_model": {"L": L, "D": D, "heads": H, "d_ff": d_ff, "vocab": V, "parameters": base_params,
                           "block_tokens": 64, "kv_cache_bytes_formula": "2*L*N*D*4",
                           "weights": "random (torch.manual_seed(0))", "position_encoding": "none"},
        "rows": rows, "summary": summary,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)

    print()
    print(f"Command: `{command}`")
    print(f"Load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; model {meta.get('name')} format "
          f"{meta.get('format')}; baseline L={L} D={D} H={H} d_ff={d_ff} V={V}"
          + (" [--quick: numbers mean little]" if args.quick else ""))
    print()
    print("| context | BRT server us/token | BRT bare us/token | full-attn us/token | full-attn / BRT server "
          "| full-attn / BRT bare | BRT state bytes | server RSS | full-attn KV bytes |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        b = r["baseline"]
        bt = f"{1e6 * b['per_token_s']:.1f}" if "per_token_s" in b else "skipped"
        r1 = f"{r['ratio_baseline_over_brt_server']:.2f}" if r["ratio_baseline_over_brt_server"] else "-"
        r2 = f"{r['ratio_baseline_over_brt_bare']:.2f}" if r["ratio_baseline_over_brt_bare"] else "-"
        print(f"| {label(r['context_tokens'])} | {1e6 * r['brt_server']['per_token_s']:.1f} | "
              f"{1e6 * r['brt_bare']['per_token_s']:.1f} | {bt} | {r1} | {r2} | {r['brt_server']['state_bytes']:,} | "
              f"{r['brt_server']['server_rss_bytes'] / 1e6:.1f} MB | {b['kv_cache_bytes']:,} |")
    for k, v in summary.items():
        if isinstance(v, list):
            print(f"- {k}: " + ", ".join(f"{x:.3f}" for x in v))
        else:
            print(f"- {k}: {v:.3f}" if v is not None else f"- {k}: n/a (a baseline length was skipped)")
    for r in rows:
        if "skipped" in r["baseline"]:
            print(f"- baseline at {label(r['context_tokens'])} not measured: {r['baseline']['skipped']}")
        if not r["brt_server"]["window_on_block_boundaries"]:
            print(f"- note: the {label(r['context_tokens'])} window was not block-aligned "
                  f"(start {r['window_start_tokens']}, offset after {r['brt_server']['block_offset_after']})")
    if max(load_before[0], load_after[0]) > LOAD_LIMIT:
        print(f"\nWARNING: the 1-minute load was {load_before[0]:.2f} before and {load_after[0]:.2f} after the run (limit {LOAD_LIMIT}): other processes competed for the cores. With N intra-op threads on N cores a "
              "competing process can slow the in-process (OpenMP) figures by 10-40x; rerun on an idle machine.")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
