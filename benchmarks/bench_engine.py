#!/usr/bin/env python3
"""Engine figures, all measured side by side in one run on this machine.

Reproduce (about two minutes on 2 idle cores; refuses to start when the 1-minute load is above 0.7):

  /usr/bin/python3 benchmarks/bench_engine.py --threads 2 --rounds 3 --out benchmarks/results/engine.json

`--quick` is a seconds-long smoke run with tiny sizes (its numbers mean nothing); `--force` runs even on a
loaded machine (the load averages before and after are recorded in the JSON either way).

The script starts build/bin/brt-server on loopback (tests/integration/conftest.BrtServer, --threads=N, the
shipped model model/artifacts/brt.pt) and, in each of --rounds rounds, measures every item below once. The
items alternate inside a round (forward order in even rounds, reversed in odd rounds) so the machine's noise
spreads over all of them; the report is the median over rounds of each figure, every round's value is in the
JSON.

 1. roofline: fp32 GEMM torch.mm 1024x1024 with torch.set_num_threads(N), GFLOP/s (2*n^3 flops), best of
    10 repetitions (the issue's definition; OpenBLAS). For reference only, the same GEMM through XNNPACK
    with a prepacked operand (the kernels the server's packed weights run; faster on a CPU with AVX-512,
    slower on an AVX2-only one).
 2. bare model in-process: the TorchScript export loaded with torch.jit.load and, as brt-server does by
    default (--cpu_packed_weights=auto: where packing pays off), pack_cpu() (XNNPACK products with
    prepacked weights; timed with one
    OpenMP thread beside XNNPACK's pool of N, as the server runs them). Export format 2 ("slots-v2"):
    pools allocated here (kv: one zero tensor (P, 2, H, C_l, dh) per layer, C_l = meta["kv_slots"][l];
    state: (P, R, 3, S, D)), init_slots, then score_slots on N=2 blocks per call; format 1: score_blocks
    with initial_state. Batch 1 (the same text the server scores alone) and batch 8 (the 8 texts of the
    concurrent server run), tokens/s. The model's FLOPs per token (formula in the JSON) turn every
    throughput into a % of the roofline.
 3. server Score: 1 session scoring ~60 kB of held-out text (kjv/Acts), sent in 16 KiB chunks with
    omit_tokens; and 8 concurrent sessions each scoring a different ~20 kB held-out text (kjv/Eze),
    aggregate tokens/s = all tokens / wall time. GetServerInfo's executor.max_score_batch is recorded.
 4. the eager Python reference scorer (model/brt/reference.py score_tokens) on the same ~60 kB text.
 5. server Generate: 1 session and 32 concurrent sessions, greedy (temperature 0), 64 tokens after a short
    prompt (every session its own held-out verse opening); aggregate generated tokens/s = all generated
    tokens / wall time (the wall time includes consuming the prompts); inter-token gaps = client-side
    arrival-time differences between consecutive streamed tokens of a session, first token excluded,
    p50/p99 over all sessions.
 5b. server Generate, 32 sessions, greedy, with GenerateRequest.stream_interval 8 (the first token alone,
    then 8 tokens per message): aggregate tokens/s as in 5; its gaps are between messages (not reported
    as inter-token gaps).
 6. the eager reference greedy decoder (model/brt/reference.py greedy, token by token with decode_step),
    1 session, the same prompt and token count as the 1-session Generate, wall time including the prompt.

The script sets its own glibc malloc as brt-server sets its own (mallopt; bench_util.use_server_allocator),
so the bare model, the eager reference and the server run under the same allocator settings.

The ratios printed and stored are ratios of the medians (each round's own ratios are in the JSON too).
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import (CHUNK, LOAD_LIMIT, check_load, chunks_of, freeze_like_server, omp_threads,  # noqa: E402
                        pack_like_server, percentile, use_server_allocator)
MODEL_PATH = os.path.join(ROOT, "model", "artifacts", "brt.pt")
TOKENIZER_PATH = os.path.join(ROOT, "model", "artifacts", "tokenizer.model")


# ---- small helpers -------------------------------------------------------------------------------------
def verse_prompts(acts, n):
    """n Generate prompts: the opening words of n different held-out verses of kjv/Acts ("1:3 To whom ...")."""
    verses = [ln for ln in acts.split(b"\n") if len(ln) > 60]
    step = max(1, len(verses) // n)
    return [verses[i * step][:48].rsplit(b" ", 1)[0] for i in range(n)]


def cut_at_newline(data):
    """data up to and including its last newline (whole lines only)."""
    i = data.rfind(b"\n")
    return data[:i + 1] if i >= 0 else data


# ---- the measurements ------------------------------------------------------------------------------------
def roofline_gflops(threads, reps, n=1024):
    import torch
    torch.set_num_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def xnnpack_gemm_gflops(threads, reps, n=1024):
    """The same GEMM through XNNPACK with a prepacked operand (what the server's packed weights use), for
    reference: the roofline above is the issue's definition (torch.mm, OpenBLAS) and stays the yardstick."""
    import torch
    torch.set_num_threads(threads)
    with omp_threads(1):
        a = torch.randn(n, n)
        ctx = torch.ops.prepacked.linear_clamp_prepack(torch.randn(n, n), None)
        torch.ops.prepacked.linear_clamp_run(a, ctx)  # warm-up
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.ops.prepacked.linear_clamp_run(a, ctx)
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


class BareModel:
    """The TorchScript export driven directly from Python, the way the server drives it."""

    def __init__(self, path, threads, packed=True):
        import torch
        torch.set_num_threads(threads)
        files = {"brt_meta.json": ""}
        self.module = torch.jit.load(path, map_location="cpu", _extra_files=files)
        self.module.eval()
        self.packed = packed and pack_like_server(self.module)
        if packed:
            self.module = freeze_like_server(self.module, self.packed)
        self.meta = json.loads(files["brt_meta.json"])
        self.format = int(self.meta.get("format", 1))
        self.W = int(self.meta["window"])

    def run(self, rows, blocks_per_call=2, warmup_calls=2):
        """Scores the token rows (equal lengths, BOS first) N blocks per call; returns (tokens/s, tokens)."""
        import torch
        m = self.meta
        B = len(rows)
        step = blocks_per_call * self.W
        usable = (min(len(r) for r in rows) // step) * step
        if usable == 0:
            raise ValueError("texts shorter than one call of blocks")
        tokens = torch.tensor([r[:usable] for r in rows], dtype=torch.long)
        with torch.no_grad(), omp_threads(1 if self.packed else torch.get_num_threads()):
            # Warm the TorchScript executor (profiling runs) on a throwaway memory, then time a fresh one.
            for attempt in ("warm-up", "timed"):
                ncalls = min(warmup_calls, usable // step) if attempt == "warm-up" else usable // step
                if self.format >= 2:
                    L, H, dh = int(m["n_layers"]), int(m["n_heads"]), int(m["head_dim"])
                    R, S, D = int(m["n_recurrent"]), int(m["n_state"]), int(m["d_model"])
                    kv = [torch.zeros(B, 2, H, int(c), dh) for c in m["kv_slots"]][:L]
                    state = torch.zeros(B, R, 3, S, D)
                    slots = torch.arange(B, dtype=torch.long)
                    self.module.init_slots(slots, kv, state)
                    starts = torch.zeros(B, dtype=torch.long)
                    t0 = time.perf_counter()
                    for c in range(ncalls):
                        self.module.score_slots(tokens[:, c * step:(c + 1) * step].contiguous(), starts, slots,
                                                kv, state, 0)
                        starts = starts + step
                    dt = time.perf_counter() - t0
                else:
                    kv, state = self.module.initial_state(B)
                    t0 = time.perf_counter()
                    for c in range(ncalls):
                        out = self.module.score_blocks(tokens[:, c * step:(c + 1) * step].contiguous(), kv, state, 0)
                        kv, state = out[4], out[5]
                    dt = time.perf_counter() - t0
        n = B * (usable // step) * step
        return n / dt, n


def flops_per_token(meta):
    """Approximate forward FLOPs per token of the BRT (multiply-add = 2 flops)."""
    cfg = meta.get("config", {})
    V, D, L, W = int(meta["vocab_size"]), int(meta["d_model"]), int(meta["n_layers"]), int(meta["window"])
    params = int(meta["parameters"])
    non_embedding = params - V * D  # tied embeddings: the V*D table is counted once, in the logits term
    terms = {"2*non_embedding_params": 2 * non_embedding, "2*D*V (logits)": 2 * D * V,
             "2*2*L*W*D (attention over the W-token window)": 2 * 2 * L * W * D}
    R, S = int(meta.get("n_recurrent", 0)), int(meta.get("n_state", 0))
    return {"flops_per_token": sum(terms.values()), "terms": terms,
            "formula": "2*(parameters - V*D) + 2*D*V + 2*2*L*W*D",
            "values": {"parameters": params, "V": V, "D": D, "L": L, "W": W, "d_ff": cfg.get("d_ff")},
            "not_included": {
                "tokens reading the state, 2*2*R*S*D per token": 2 * 2 * R * S * D,
                "state update attention (S queries over S state + 2W token keys), 2*2*R*S*(S+2W)*D / W per token":
                    2 * 2 * R * S * (S + 2 * W) * D // max(W, 1)},
            "note": "the recurrent layer's state projections are in the parameters term, although they act on "
                    "S state vectors once per block rather than on every token (S == W here, so about equal)"}


def server_score(server, pb, score, texts):
    """Scores each text in its own session, all concurrently; returns (aggregate tokens/s, tokens)."""
    sids = [server.stub.CreateSession(pb.CreateSessionRequest(label="bench_engine"), timeout=10).id
            for _ in texts]
    counts = [0] * len(texts)
    errors = []
    barrier = threading.Barrier(len(texts) + 1)

    def one(i):
        try:
            barrier.wait()
            counts[i] = score(server.stub, sids[i], chunks_of(texts[i]), omit_tokens=True)[1].tokens
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    ths = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in ths:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ths:
        t.join()
    dt = time.perf_counter() - t0
    for s in sids:
        server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s), timeout=10)
    if errors:
        raise RuntimeError(f"Score failed: {errors[0]}")
    return sum(counts) / dt, sum(counts)


LOAD_CLIENT = os.path.join(ROOT, "build", "bin", "brt-generate-load")


def server_generate(server, pb, prompts, max_tokens, temperature=0.0, top_p=1.0, stagger=0, client="cpp",
                    stream_interval=1, arrival_ms=0, client_rt=False):
    """Generate in len(prompts) concurrent sessions (greedy unless temperature > 0; session i's seed is i + 1).
    stagger > 0: session i first reads i * stagger newline tokens (untimed), so the sessions sit at different
    offsets in their blocks and complete blocks in different steps; 0: they all start at position 0 and
    complete their blocks in the same step. client "cpp": the streams run in build/bin/brt-generate-load (a
    C++ gRPC client, a few percent of a core); "python": one thread and one grpcio stream per session here
    (about a third of this machine's CPU at 32 sessions). stream_interval > 1 (C++ client only): tokens
    per message (GenerateRequest.stream_interval); the gaps are then between messages. arrival_ms > 0 (C++
    client only): session i's call starts i * arrival_ms ms after the first. client_rt (C++ client only): the
    load client runs at real-time priority (chrt -f 10; needs root or CAP_SYS_NICE), so that on a machine
    the server fills it reads each message when it arrives, as a client on another machine would, instead of
    waiting for a core. Returns aggregate tokens/s, gaps (s), tokens."""
    n = len(prompts)
    sids = [server.stub.CreateSession(pb.CreateSessionRequest(label="bench_engine"), timeout=10).id
            for _ in range(n)]
    if stagger:
        from conftest import score
        for i, sid in enumerate(sids):
            if i:
                score(server.stub, sid, [b"\n" * (i * stagger)], omit_tokens=True)
    try:
        if client == "cpp":
            return generate_cpp(server, sids, prompts, max_tokens, temperature, top_p, stream_interval, arrival_ms,
                                client_rt)
        if stream_interval != 1 or arrival_ms or client_rt:
            raise ValueError("stream_interval > 1, arrival_ms and client_rt need the C++ client")
        return generate_python(server, pb, sids, prompts, max_tokens, temperature, top_p)
    finally:
        for s in sids:
            server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s), timeout=10)


def generate_cpp(server, sids, prompts, max_tokens, temperature, top_p, stream_interval=1, arrival_ms=0,
                 client_rt=False):
    if any(b"\n" in p for p in prompts):
        raise ValueError("brt-generate-load takes one prompt per line")
    with tempfile.NamedTemporaryFile("wb", suffix=".prompts") as f:
        f.write(b"\n".join(prompts) + b"\n")
        f.flush()
        prefix = ["chrt", "-f", "10"] if client_rt else []
        proc = subprocess.run(prefix + [LOAD_CLIENT, f"--address={server.address}", "--session_ids=" + ",".join(sids),
                               f"--prompts_file={f.name}", f"--max_tokens={max_tokens}",
                               f"--temperature={temperature}", f"--top_p={top_p}",
                               f"--stream_interval={stream_interval}", f"--arrival_ms={arrival_ms}"],
                              capture_output=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"brt-generate-load failed ({proc.returncode}): {proc.stdout[-500:]!r} "
                           f"{proc.stderr[-500:]!r}")
    out = json.loads(proc.stdout)
    return out["tokens_per_s"], [g / 1e6 for g in out["gaps_us"]], out["tokens"]


def generate_python(server, pb, sids, prompts, max_tokens, temperature, top_p):
    n = len(prompts)
    stamps = [None] * n
    errors = []
    barrier = threading.Barrier(n + 1)

    def one(i):
        try:
            req = pb.GenerateRequest(session_id=sids[i], prompt=prompts[i], max_tokens=max_tokens,
                                     sampling=pb.SamplingParams(temperature=temperature, top_p=top_p,
                                                                seed=i + 1))
            mine = []
            barrier.wait()
            for msg in server.stub.Generate(req, timeout=600):
                if msg.finish_reason == pb.FINISH_REASON_UNSPECIFIED:
                    mine.append(time.perf_counter())
            stamps[i] = mine
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ths:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ths:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"Generate failed: {errors[0]}")
    total = sum(len(s) for s in stamps)
    gaps = [b - a for s in stamps for a, b in zip(s, s[1:])]
    return total / dt, gaps, total


def reference_score(ref_model, score_tokens, ids):
    t0 = time.perf_counter()
    nll = score_tokens(ref_model, ids)
    return len(nll) / (time.perf_counter() - t0), len(nll)


def reference_greedy(ref_model, greedy, ids, max_tokens, eos_id):
    t0 = time.perf_counter()
    out = greedy(ref_model, ids, max_tokens, eos_id)
    return len(out) / (time.perf_counter() - t0), len(out)


# ---- report -------------------------------------------------------------------------------------------------
FIGURES = [  # key, label, unit
    ("roofline_gflops", "roofline: fp32 torch.mm 1024^3, best of reps", "GFLOP/s"),
    ("xnnpack_gemm_gflops", "the same GEMM through XNNPACK, prepacked (reference only)", "GFLOP/s"),
    ("bare_batch1_tps", "bare model in-process, batch 1, 2 blocks/call", "tokens/s"),
    ("bare_batch8_tps", "bare model in-process, batch 8, 2 blocks/call", "tokens/s"),
    ("server_score_1_tps", "server Score, 1 session (~60 kB)", "tokens/s"),
    ("server_score_8_tps", "server Score, 8 concurrent sessions (~20 kB each), aggregate", "tokens/s"),
    ("reference_score_tps", "eager reference scorer (~60 kB)", "tokens/s"),
    ("generate_1_tps", "server Generate, 1 session", "tokens/s"),
    ("generate_32_tps", "server Generate, 32 concurrent sessions, aggregate", "tokens/s"),
    ("generate_1_gap_p50_ms", "Generate 1: inter-token gap p50", "ms"),
    ("generate_1_gap_p99_ms", "Generate 1: inter-token gap p99", "ms"),
    ("generate_32_gap_p50_ms", "Generate 32: inter-token gap p50", "ms"),
    ("generate_32_gap_p99_ms", "Generate 32: inter-token gap p99", "ms"),
    ("generate_32_sampled_tps", "server Generate, 32 sessions, sampled (temperature 0.8, top-p 0.95)", "tokens/s"),
    ("generate_32_sampled_gap_p50_ms", "Generate 32 sampled: inter-token gap p50", "ms"),
    ("generate_32_sampled_gap_p99_ms", "Generate 32 sampled: inter-token gap p99", "ms"),
    ("generate_32_staggered_tps", "server Generate, 32 sessions at staggered block offsets (greedy)", "tokens/s"),
    ("generate_32_staggered_gap_p50_ms", "Generate 32 staggered: inter-token gap p50", "ms"),
    ("generate_32_staggered_gap_p99_ms", "Generate 32 staggered: inter-token gap p99", "ms"),
    ("generate_32_interval8_tps", "server Generate, 32 sessions, stream_interval 8 (8 tokens a message)",
     "tokens/s"),
    ("reference_greedy_tps", "eager reference greedy decode, 1 session", "tokens/s"),
    ("server_max_score_batch", "server executor max_score_batch (cumulative)", "rows"),
]

RATIOS = [  # key, label, numerator, denominator (None: % of roofline)
    ("server_score_8_pct_roofline", "server_score_8 as % of roofline", "server_score_8_tps", None),
    ("server_score_1_pct_roofline", "server_score_1 as % of roofline", "server_score_1_tps", None),
    ("server_score_1_over_bare_batch1", "server_score_1 / bare_batch1", "server_score_1_tps", "bare_batch1_tps"),
    ("server_score_8_over_bare_batch8", "server_score_8 / bare_batch8", "server_score_8_tps", "bare_batch8_tps"),
    ("server_score_1_over_reference", "server_score_1 / reference", "server_score_1_tps", "reference_score_tps"),
    ("generate_32_over_generate_1", "generate_32_total / generate_1", "generate_32_tps", "generate_1_tps"),
    ("generate_32_over_server_score_8", "generate_32_total / server_score_8", "generate_32_tps",
     "server_score_8_tps"),
    ("generate_32_interval8_over_server_score_8", "generate_32 (stream_interval 8) / server_score_8",
     "generate_32_interval8_tps", "server_score_8_tps"),
    ("generate_32_interval8_over_generate_1", "generate_32 (stream_interval 8) / generate_1",
     "generate_32_interval8_tps", "generate_1_tps"),
    ("generate_32_interval8_over_interval1", "generate_32: stream_interval 8 / 1", "generate_32_interval8_tps",
     "generate_32_tps"),
    ("generate_32_gap_p99_over_p50", "gen32 inter-token p99 / p50", "generate_32_gap_p99_ms",
     "generate_32_gap_p50_ms"),
    ("generate_32_staggered_gap_p99_over_p50", "gen32 staggered inter-token p99 / p50",
     "generate_32_staggered_gap_p99_ms", "generate_32_staggered_gap_p50_ms"),
    ("generate_32_sampled_over_greedy", "generate_32 sampled / greedy", "generate_32_sampled_tps", "generate_32_tps"),
    ("generate_1_over_reference_greedy", "generate_1 / reference_greedy", "generate_1_tps", "reference_greedy_tps"),
]


def ratios_of(fig, fpt):
    out = {}
    for key, _, num, den in RATIOS:
        if num not in fig or (den is not None and den not in fig):
            continue
        if den is None:
            roof_tps = fig["roofline_gflops"] * 1e9 / fpt
            out[key] = 100.0 * fig[num] / roof_tps
        else:
            out[key] = fig[num] / fig[den] if fig[den] else float("nan")
    return out


def fmt(x):
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.3g}"
    return str(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads, server and in-process alike")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--client", choices=("cpp", "python"), default="cpp",
                    help="Generate client: build/bin/brt-generate-load (C++) or grpcio threads in this process")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "engine.json"))
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run with tiny sizes")
    ap.add_argument("--force", action="store_true", help=f"run even if the 1-minute load is above {LOAD_LIMIT}")
    args = ap.parse_args()
    command = "/usr/bin/python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    load_before = check_load(args.force)
    use_server_allocator()  # the bare model and the reference run under the server's malloc settings

    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    sys.path.insert(0, os.path.join(ROOT, "model"))
    import torch
    from conftest import STUBS, BrtServer, corpus_docs, score
    from brt.reference import greedy, load_eager, score_tokens
    from brt.tokenizer import Tokenizer
    pb = STUBS.pb
    torch.set_num_threads(args.threads)

    q = args.quick
    score1_bytes, score8_bytes = (4000, 1500) if q else (60000, 20000)
    gen_tokens = 8 if q else args.gen_tokens
    gen_sessions = 32
    roof_reps = 3 if q else 10

    docs = {d["name"]: d["text"].encode("utf-8") for d in corpus_docs("test")}
    acts, eze = docs["kjv/Acts"], docs["kjv/Eze"]
    text1 = cut_at_newline(acts[:score1_bytes])
    texts8 = [cut_at_newline(eze[i * score8_bytes:(i + 1) * score8_bytes]) for i in range(8)]
    prompts = verse_prompts(acts, gen_sessions)

    tok = Tokenizer(TOKENIZER_PATH)
    ids1 = [tok.bos_id] + tok.encode_bytes(text1)
    ids8 = [[tok.bos_id] + tok.encode_bytes(t) for t in texts8]
    prompt_ids = [tok.bos_id] + tok.encode_bytes(prompts[0])

    bare = BareModel(MODEL_PATH, args.threads)
    meta = bare.meta
    ref_model, _ = load_eager(MODEL_PATH)
    fpt = flops_per_token(meta)

    server = BrtServer(threads=args.threads)
    rounds = []
    try:
        info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        # Warm-up of everything timed below (TorchScript profiling runs, first-call allocations).
        server_score(server, pb, score, [text1[:3000]])
        server_score(server, pb, score, [t[:1500] for t in texts8])
        server_generate(server, pb, prompts[:2], 4, client=args.client)
        bare.run([ids1[:512]])
        bare.run([r[:256] for r in ids8])
        score_tokens(ref_model, ids1[:256])
        greedy(ref_model, prompt_ids, 4, meta["eos_id"])

        def m_roofline():
            return {"roofline_gflops": roofline_gflops(args.threads, roof_reps),
                    "xnnpack_gemm_gflops": xnnpack_gemm_gflops(args.threads, roof_reps)}

        def m_bare1():
            tps, n = bare.run([ids1])
            return {"bare_batch1_tps": tps, "bare_batch1_tokens": n}

        def m_bare8():
            tps, n = bare.run(ids8)
            return {"bare_batch8_tps": tps, "bare_batch8_tokens": n}

        def m_score1():
            tps, n = server_score(server, pb, score, [text1])
            return {"server_score_1_tps": tps, "server_score_1_tokens": n}

        def m_score8():
            tps, n = server_score(server, pb, score, texts8)
            ex = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).executor
            return {"server_score_8_tps": tps, "server_score_8_tokens": n,
                    "server_max_score_batch": ex.max_score_batch}

        # The eager reference gets an untimed call first in every round: right after the packed bare model
        # in this same process its first call ran up to 30% slower (then recovered), which would flatter the
        # ratios over it.
        def m_reference():
            score_tokens(ref_model, ids1[:512])
            tps, n = reference_score(ref_model, score_tokens, ids1)
            return {"reference_score_tps": tps, "reference_score_tokens": n}

        def m_gen1():
            tps, gaps, n = server_generate(server, pb, prompts[:1], gen_tokens, client=args.client)
            return {"generate_1_tps": tps, "generate_1_tokens": n,
                    "generate_1_gap_p50_ms": 1000 * percentile(gaps, 50),
                    "generate_1_gap_p99_ms": 1000 * percentile(gaps, 99)}

        def m_gen32():
            tps, gaps, n = server_generate(server, pb, prompts, gen_tokens, client=args.client)
            ex = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).executor
            return {"generate_32_tps": tps, "generate_32_tokens": n,
                    "generate_32_gap_p50_ms": 1000 * percentile(gaps, 50),
                    "generate_32_gap_p99_ms": 1000 * percentile(gaps, 99),
                    "server_max_decode_batch": ex.max_decode_batch}

        def m_gen32_sampled():
            tps, gaps, n = server_generate(server, pb, prompts, gen_tokens, temperature=0.8, top_p=0.95, client=args.client)
            return {"generate_32_sampled_tps": tps, "generate_32_sampled_tokens": n,
                    "generate_32_sampled_gap_p50_ms": 1000 * percentile(gaps, 50),
                    "generate_32_sampled_gap_p99_ms": 1000 * percentile(gaps, 99)}

        def m_gen32_staggered():
            # Session i at offset 2i: the 32 sessions' block ends fall in different steps.
            tps, gaps, n = server_generate(server, pb, prompts, gen_tokens, stagger=2, client=args.client)
            return {"generate_32_staggered_tps": tps, "generate_32_staggered_tokens": n,
                    "generate_32_staggered_gap_p50_ms": 1000 * percentile(gaps, 50),
                    "generate_32_staggered_gap_p99_ms": 1000 * percentile(gaps, 99)}

        def m_gen32_interval8():
            tps, _, n = server_generate(server, pb, prompts, gen_tokens, client=args.client, stream_interval=8)
            return {"generate_32_interval8_tps": tps, "generate_32_interval8_tokens": n}

        def m_ref_greedy():
            greedy(ref_model, prompt_ids, 8, meta["eos_id"])
            tps, n = reference_greedy(ref_model, greedy, prompt_ids, gen_tokens, meta["eos_id"])
            return {"reference_greedy_tps": tps, "reference_greedy_tokens": n}

        order = [m_roofline, m_bare1, m_score1, m_reference, m_bare8, m_score8, m_gen1, m_ref_greedy, m_gen32,
                 m_gen32_sampled, m_gen32_staggered] + ([m_gen32_interval8] if args.client == "cpp" else [])
        for r in range(args.rounds):
            fig = {"round": r, "order": []}
            for fn in (order if r % 2 == 0 else list(reversed(order))):
                fig["order"].append(fn.__name__[2:])
                fig.update(fn())
            rounds.append(fig)
            print(f"round {r}: " + ", ".join(f"{k}={fmt(v)}" for k, v in fig.items()
                                              if isinstance(v, (int, float)) and k != "round"), flush=True)
        server_info = {"max_batch_size": info.limits.max_batch_size, "window": info.model.window,
                       "state_bytes_per_session": info.model.state_bytes_per_session, "version": info.version,
                       "device": info.model.device, "dtype": info.model.dtype}
    finally:
        server.stop()
    load_after = os.getloadavg()

    keys = [k for k in rounds[0] if isinstance(rounds[0][k], (int, float)) and k != "round"]
    median = {k: statistics.median(fr[k] for fr in rounds) for k in keys}
    ratios = ratios_of(median, fpt["flops_per_token"])
    per_round_ratios = [ratios_of(fr, fpt["flops_per_token"]) for fr in rounds]
    roof_tps = median["roofline_gflops"] * 1e9 / fpt["flops_per_token"]

    res = {
        "command": command, "generate_client": args.client, "quick": q, "forced": args.force,
        "started_note": "numbers from --quick mean nothing" if q else "",
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "threads": args.threads, "bare_model_packed": bare.packed, "rounds_requested": args.rounds,
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "sizes": {"score_1_text_bytes": len(text1), "score_1_text": "kjv/Acts (held-out), first bytes",
                  "score_8_text_bytes": [len(t) for t in texts8], "score_8_texts": "kjv/Eze (held-out), 8 slices",
                  "chunk_bytes": CHUNK, "blocks_per_bare_call": 2, "generate_tokens": gen_tokens,
                  "generate_sessions": [1, gen_sessions], "prompts": [p.decode() for p in prompts],
                  "roofline_reps": roof_reps},
        "model": {k: meta.get(k) for k in ("name", "format", "contract", "parameters", "vocab_size", "d_model",
                                            "n_layers", "n_heads", "window", "n_state", "n_recurrent",
                                            "kv_slots", "fingerprint")},
        "bare_model_api": "init_slots + score_slots (format 2)" if bare.format >= 2 else
                          "initial_state + score_blocks (format 1)",
        "server": server_info,
        "flops": fpt, "roofline_equivalent_tokens_per_s": roof_tps,
        "rounds": rounds, "median": median, "ratios_of_medians": ratios, "ratios_per_round": per_round_ratios,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)

    print()
    print(f"Command: `{command}`")
    print(f"Load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {args.rounds} round(s); "
          f"model {meta.get('name')} format {meta.get('format')}; {fpt['flops_per_token'] / 1e6:.2f} MFLOP/token "
          f"({fpt['formula']}); roofline-equivalent {roof_tps:,.0f} tokens/s" + (" [--quick: sizes are tiny, "
                                                                                 "numbers mean nothing]" if q else ""))
    print()
    print("| figure | median | unit | % of roofline | every round |")
    print("| --- | ---: | --- | ---: | --- |")
    for key, label, unit in FIGURES:
        if key not in median:
            continue
        pct = f"{100 * median[key] / roof_tps:.1f}%" if unit == "tokens/s" else ""
        print(f"| {label} | {fmt(median[key])} | {unit} | {pct} | {', '.join(fmt(fr[key]) for fr in rounds)} |")
    print()
    print("| ratio (of medians) | value | every round |")
    print("| --- | ---: | --- |")
    for key, label, _, _ in RATIOS:
        if key in ratios:
            unit = "%" if key.endswith("pct_roofline") else ""
            print(f"| {label} | {fmt(ratios[key])}{unit} | {', '.join(fmt(pr.get(key, float('nan'))) for pr in per_round_ratios)} |")
    if max(load_before[0], load_after[0]) > LOAD_LIMIT:
        print(f"\nWARNING: the 1-minute load was {load_before[0]:.2f} before and {load_after[0]:.2f} after the run (limit {LOAD_LIMIT}): other processes competed for the cores. With N intra-op threads on N cores a "
              "competing process can slow the in-process (OpenMP) figures by 10-40x; rerun on an idle machine.")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
