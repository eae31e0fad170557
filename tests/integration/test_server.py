"""End-to-end tests of brt-server: the real binary on loopback, real gRPC, the shipped model."""
import math
import os
import random
import threading
import time

import grpc
import pytest
import torch

from conftest import ROOT, STUBS, BrtServer, score, split_random
from brt.reference import greedy, score_tokens

pb = STUBS.pb


def new_session(server, **kw):
    return server.stub.CreateSession(pb.CreateSessionRequest(**kw), timeout=30).id


def excerpt(texts, name, n_bytes, start=0):
    t = texts[name].encode()[start:start + n_bytes]
    return t[:t.rfind(b"\n") + 1]  # whole lines


def reference_nll(reference, ids):
    return score_tokens(reference.model, [reference.tok.bos_id] + list(ids))


def test_health_and_server_info(server, reference):
    r = server.health.Check(STUBS.health.HealthCheckRequest(service=""), timeout=5)
    assert r.status == STUBS.health.HealthCheckResponse.SERVING
    info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
    assert info.model.fingerprint == reference.meta["fingerprint"]
    assert info.model.window == reference.meta["window"]
    assert info.model.tokenizer_sha256 == reference.tok.sha256
    assert info.model.device == "cpu"
    # The shipped export freezes (--freeze_model, default on), unless it was packed for XNNPACK, which cannot be.
    startup = [line for line in server.read_log().splitlines() if "brt-server: model " in line]
    assert len(startup) == 1, server.read_log()[-2000:]
    assert ("frozen" in startup[0]) != ("XNNPACK packed weights" in startup[0]), startup[0]


def test_reflection_lists_the_service(server):
    stub = STUBS.refl_rpc.ServerReflectionStub(server.channel)
    req = STUBS.refl.ServerReflectionRequest(list_services="")
    resp = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=10)))
    names = {s.name for s in resp.list_services_response.service}
    assert "brt.v1.Brt" in names and "grpc.health.v1.Health" in names


def test_session_lifecycle(server):
    sid = server.stub.CreateSession(pb.CreateSessionRequest(label="book"), timeout=10)
    assert sid.id.startswith("s_") and len(sid.id) == 34 and sid.label == "book"
    assert sid.position == 1 and sid.tokens_consumed == 0 and sid.state_bytes > 0
    other = new_session(server)
    assert other != sid.id
    listed = {s.id for s in server.stub.ListSessions(pb.ListSessionsRequest(), timeout=10).sessions}
    assert {sid.id, other} <= listed
    server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=other), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        server.stub.GetSession(pb.GetSessionRequest(session_id=other), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_score_matches_reference_in_random_chunks(server, reference, texts):
    data = excerpt(texts, "kjv/Acts", 3000)
    ids = reference.tok.encode_bytes(data)
    W = reference.meta["window"]
    assert len(ids) >= 5 * W
    sid = new_session(server)
    chunks = split_random(data, random.Random(7), 1, 97)
    toks, summary = score(server.stub, sid, chunks, top_k=3)
    assert [t.token_id for t in toks] == ids
    assert b"".join(t.piece for t in toks) == data
    assert all(data[t.byte_begin:t.byte_end] == t.piece for t in toks)
    assert [t.position for t in toks] == list(range(1, len(ids) + 1))
    want = reference_nll(reference, ids)
    got = [t.nll for t in toks]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    # top-k alternatives: sorted, and the true token's logprob matches when it is among them
    for t in toks:
        assert len(t.top) == 3
        assert t.top[0].logprob >= t.top[1].logprob >= t.top[2].logprob
        for alt in t.top:
            if alt.token_id == t.token_id:
                assert abs(-alt.logprob - t.nll) < 1e-4
    assert summary.tokens == len(ids) and summary.bytes == len(data)
    assert abs(summary.total_nll - sum(want)) < 1e-2
    assert abs(summary.bits_per_token - sum(want) / len(ids) / math.log(2)) < 1e-4
    assert abs(summary.perplexity - math.exp(summary.mean_nll)) < 1e-6 * summary.perplexity
    assert abs(summary.bits_per_byte - summary.total_nll / math.log(2) / len(data)) < 1e-9
    assert summary.position == len(ids) + 1
    s = server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
    assert s.tokens_consumed == len(ids) and s.block_offset == (len(ids) + 1) % W


def test_two_score_calls_equal_one(server, reference, texts):
    data = excerpt(texts, "kjv/Eze", 2500)
    cut = data.find(b"\n", len(data) // 2 + 13) + 1  # a newline not on a block boundary, most likely
    one = new_session(server)
    whole, _ = score(server.stub, one, split_random(data, random.Random(1)))
    two = new_session(server)
    a, sa = score(server.stub, two, split_random(data[:cut], random.Random(2)))
    b, sb = score(server.stub, two, split_random(data[cut:], random.Random(3)))
    assert [t.token_id for t in a + b] == [t.token_id for t in whole]
    assert max(abs(x.nll - y.nll) for x, y in zip(a + b, whole)) < 1e-5
    assert sb.position == whole[-1].position + 1
    assert b[0].byte_begin == 0  # offsets count from each call's first byte


def test_invalid_utf8_and_mid_sequence_splits_are_lossless(server, reference):
    data = "naïve café — 中文 🎉 ▁marker▁\n".encode() * 5 + b"broken \xff\xc3 bytes\n"
    sid = new_session(server)
    toks, summary = score(server.stub, sid, [data[i:i + 1] for i in range(len(data))])
    assert b"".join(t.piece for t in toks) == data
    assert [t.token_id for t in toks] == reference.tok.encode_bytes(data)


def generate(server, sid, prompt=b"", max_tokens=20, timeout=120, **sampling):
    req = pb.GenerateRequest(session_id=sid, prompt=prompt, max_tokens=max_tokens,
                             sampling=pb.SamplingParams(**sampling))
    msgs = list(server.stub.Generate(req, timeout=timeout))
    return msgs[:-1], msgs[-1]


def test_seeded_generation_is_reproducible(server):
    prompt = b"And it came to pass, when the king"
    outs = []
    for _ in range(2):
        sid = new_session(server)
        toks, last = generate(server, sid, prompt, 30, temperature=0.9, top_k=50, top_p=0.95, seed=42)
        outs.append([t.token_id for t in toks])
        assert last.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_EOS)
    assert outs[0] == outs[1] and len(outs[0]) > 0
    sid = new_session(server)
    toks, _ = generate(server, sid, prompt, 30, temperature=0.9, top_k=50, top_p=0.95, seed=43)
    assert [t.token_id for t in toks] != outs[0]


def test_greedy_generation_equals_reference(server, reference):
    prompt = b"1:1 The book of the generation of Jesus Christ, the son of David"
    sid = new_session(server)
    toks, last = generate(server, sid, prompt, 80, temperature=0.0)
    ids = [reference.tok.bos_id] + reference.tok.encode_bytes(prompt)
    want = greedy(reference.model, ids, 80, eos_id=reference.tok.eos_id)
    got = [t.token_id for t in toks]
    if last.finish_reason == pb.FINISH_REASON_EOS:
        want = want[:-1]
    assert got == want
    assert "".join(t.text for t in toks) + last.text == reference.tok.decode(got)
    # Generated tokens became part of the session.
    s = server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
    assert s.tokens_consumed == len(ids) - 1 + len(got)


def test_generation_continues_a_scored_session_like_reference(server, reference, texts):
    data = excerpt(texts, "kjv/Acts", 900)
    sid = new_session(server)
    score(server.stub, sid, [data])
    toks, _ = generate(server, sid, b"", 40, temperature=0.0)
    ids = [reference.tok.bos_id] + reference.tok.encode_bytes(data)
    want = greedy(reference.model, ids, 40, eos_id=reference.tok.eos_id)
    assert [t.token_id for t in toks] == want[:len(toks)]


def test_eight_concurrent_sessions_match_alone_and_are_batched(server, reference, texts):
    names = ["kjv/Acts", "kjv/Eze"] + [n for n in texts if n.startswith("py/")]
    datas = [excerpt(texts, names[i % len(names)], 2200, start=1000 * (i // len(names))) for i in range(8)]
    before = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).executor
    results = [None] * 8
    barrier = threading.Barrier(8)

    def run(i):
        sid = new_session(server)
        barrier.wait()
        results[i] = score(server.stub, sid, split_random(datas[i], random.Random(i), 50, 400))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        ids = reference.tok.encode_bytes(datas[i])
        toks, _ = results[i]
        assert [t.token_id for t in toks] == ids
        want = reference_nll(reference, ids)
        assert max(abs(t.nll - w) for t, w in zip(toks, want)) < 1e-4
    after = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).executor
    assert after.score_calls > before.score_calls
    assert after.max_score_batch > 1


def test_generation_keeps_streaming_while_a_book_is_scored(server, texts):
    book = texts["kjv/Eze"].encode()
    scorer = new_session(server)
    done = {}

    def score_book():
        score(server.stub, scorer, split_random(book, random.Random(5), 2000, 8000), omit_tokens=True)
        done["score"] = time.time()

    th = threading.Thread(target=score_book)
    th.start()
    time.sleep(1.0)  # the book is being scored
    sid = new_session(server)
    stamps = []
    req = pb.GenerateRequest(session_id=sid, prompt=b"And the word of the LORD came", max_tokens=40,
                             sampling=pb.SamplingParams(temperature=0.0))
    for msg in server.stub.Generate(req, timeout=300):
        stamps.append(time.time())
    gen_done = time.time()
    th.join()
    assert len(stamps) == 41
    assert gen_done < done["score"], "generation waited for the whole book"
    gaps = [b - a for a, b in zip(stamps[1:-1], stamps[2:])]
    assert max(gaps) < 2.0, f"inter-token gap {max(gaps):.2f}s while scoring"


# ---- bad input ---------------------------------------------------------------------------------------

def code_of(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def test_unknown_session_is_not_found(server):
    bogus = "s_" + "0" * 32
    for fn in [lambda: server.stub.GetSession(pb.GetSessionRequest(session_id=bogus), timeout=10),
               lambda: server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=bogus), timeout=10),
               lambda: score(server.stub, bogus, [b"hello\n"]),
               lambda: generate(server, bogus, b"hi", 3)]:
        code, msg = code_of(fn)
        assert code == grpc.StatusCode.NOT_FOUND and bogus in msg


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.5), ("temperature", 7.0), ("top_p", 1.5), ("top_p", 0.0), ("min_p", 1.0),
    ("min_p", -0.1), ("repetition_penalty", 0.0), ("repetition_penalty", 11.0), ("top_k", 100000),
])
def test_out_of_range_sampling_is_invalid_argument(server, field, value):
    sid = new_session(server)
    code, msg = code_of(lambda: generate(server, sid, b"x", 3, **{field: value}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in msg
    code, msg = code_of(lambda: server.stub.CreateSession(
        pb.CreateSessionRequest(default_sampling=pb.SamplingParams(**{field: value})), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field in msg
    # The session is unharmed.
    assert server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10).position == 1


def test_other_bad_requests(server):
    sid = new_session(server)
    code, msg = code_of(lambda: generate(server, sid, b"x", 10 ** 6))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in msg
    code, msg = code_of(lambda: score(server.stub, sid, [b"x\n"], top_k=21))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in msg
    code, msg = code_of(lambda: score(server.stub, "", [b"x\n"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "session_id" in msg
    code, msg = code_of(lambda: generate(server, sid, b"x", 3, stop=[""]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "stop" in msg
    assert server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10).position == 1


def test_limits_from_flags():
    s = BrtServer("--max_chunk_bytes=100", "--max_sessions=2")
    try:
        sid = new_session(s)
        code, msg = code_of(lambda: score(s.stub, sid, [b"a" * 101]))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "100" in msg
        toks, _ = score(s.stub, sid, [b"a" * 100])  # at the limit: fine, and nothing was lost before
        assert len(toks) > 0
        new_session(s)
        code, msg = code_of(lambda: new_session(s))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_sessions" in msg
    finally:
        assert s.stop() == 0


def test_runner_flags_refuse_bad_values_and_native_simd_keeps_every_bit():
    import subprocess
    from conftest import MODEL_DIR, SERVER_BIN, free_port
    for flag, message in (("--native_simd=sse4", "--native_simd must be auto"),
                          ("--pool_growth=sometimes", "--pool_growth must be in_place"),
                          ("--cpu_packed_weights=maybe", "--cpu_packed_weights must be auto"),
                          ("--row_shards=-1", "--row_shards must be >= 0")):
        r = subprocess.run([SERVER_BIN, f"--model_dir={MODEL_DIR}", f"--listen=127.0.0.1:{free_port()}", flag],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and message in r.stderr, (flag, r.returncode, r.stderr[-500:])
    # The decode step's kernels capped at AVX2 (or portable loops) against the CPU's best: AVX2 and AVX-512
    # compute the same multiply-adds in the same order, so greedy tokens and their log-probabilities match
    # in every bit; the portable loops round differently, so only to fp32 tolerance.
    prompt = b"1:1 In the beginning God created the heaven and the earth."
    runs = {}
    for simd in ("auto", "avx2", "portable"):
        server = BrtServer(f"--native_simd={simd}")
        try:
            sid = new_session(server)
            toks, _ = generate(server, sid, prompt, 48, temperature=0.0)
            runs[simd] = ([t.token_id for t in toks], [t.logprob for t in toks], server.read_log())
        finally:
            server.stop()
    assert "native decode step (team, " in runs["auto"][2], runs["auto"][2][-2000:]
    assert "native decode step (team, portable)" in runs["portable"][2], runs["portable"][2][-2000:]
    assert len(runs["auto"][0]) == 48
    assert runs["avx2"][:2] == runs["auto"][:2]
    assert runs["portable"][0] == runs["auto"][0]
    assert max(abs(a - b) for a, b in zip(runs["portable"][1], runs["auto"][1])) < 1e-3


def _row_threads(pid):
    """{name: CPUs allowed} of a process's row-shard workers (threads named brt-row-N)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        if name.startswith("brt-row-"):
            out[name] = os.sched_getaffinity(int(tid))
    return out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning row workers needs 2 or more CPUs")
def test_row_workers_pinned_each_to_its_own_cpu_when_they_fill_the_machine():
    import subprocess
    from conftest import MODEL_DIR, SERVER_BIN, free_port
    cpus = sorted(os.sched_getaffinity(0))
    prompt = b"1:1 In the beginning God created the heaven and the earth."
    # As many workers as CPUs (auto): worker i on cpus[i], said at start-up; the same greedy tokens as unpinned.
    runs = {}
    for pin in ("auto", "off"):
        server = BrtServer(f"--pin_workers={pin}", threads=len(cpus))
        try:
            rows = _row_threads(server.proc.pid)
            toks, _ = generate(server, new_session(server), prompt, 24, temperature=0.0)
            runs[pin] = [t.token_id for t in toks]
            log = server.read_log()
        finally:
            server.stop()
        assert sorted(rows) == [f"brt-row-{i}" for i in range(len(cpus))], rows
        if pin == "auto":
            assert f"row workers pinned to CPUs {','.join(map(str, cpus))}" in log, log[-2000:]
            assert [rows[f"brt-row-{i}"] for i in range(len(cpus))] == [{c} for c in cpus], rows
        else:
            assert "pinned" not in log, log[-2000:]
            assert all(allowed == set(cpus) for allowed in rows.values()), rows
    assert runs["auto"] == runs["off"] and len(runs["auto"]) == 24
    # Workers not as many as the CPUs: auto leaves them to the scheduler (replicas sharing a host); on pins
    # them round robin.
    for pin in ("auto", "on"):
        server = BrtServer(f"--pin_workers={pin}", f"--row_shards={len(cpus) + 1}", threads=1)
        try:
            rows = _row_threads(server.proc.pid)
            log = server.read_log()
        finally:
            server.stop()
        assert len(rows) == len(cpus) + 1, rows
        if pin == "auto":
            assert "pinned" not in log and all(a == set(cpus) for a in rows.values()), (rows, log[-2000:])
        else:
            assert "row workers pinned to CPUs" in log, log[-2000:]
            assert [rows[f"brt-row-{i}"] for i in range(len(rows))] == [{cpus[i % len(cpus)]} for i in range(len(rows))]
    # --threads=0 counts the CPUs this process may use (its affinity mask), not the machine's: on one CPU
    # the server runs one worker, so no row-shard pool at all.
    os.sched_setaffinity(0, {cpus[0]})
    try:
        server = BrtServer(threads=0)
    finally:
        os.sched_setaffinity(0, set(cpus))
    try:
        assert _row_threads(server.proc.pid) == {}
        toks, _ = generate(server, new_session(server), prompt, 8, temperature=0.0)
        assert [t.token_id for t in toks] == runs["auto"][:8]
    finally:
        server.stop()
    r = subprocess.run([SERVER_BIN, f"--model_dir={MODEL_DIR}", f"--listen=127.0.0.1:{free_port()}",
                        "--pin_workers=sometimes"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--pin_workers must be auto" in r.stderr and "'sometimes'" in r.stderr, r.stderr


def test_busy_session_is_failed_precondition(server, texts):
    sid = new_session(server)
    book = texts["kjv/Eze"].encode()[:200000]
    started = threading.Event()

    def chunks():
        for c in split_random(book, random.Random(0), 4000, 8000):
            started.set()
            yield c

    th = threading.Thread(target=lambda: score(server.stub, sid, chunks(), omit_tokens=True))
    th.start()
    started.wait()
    time.sleep(0.3)
    code, msg = code_of(lambda: generate(server, sid, b"x", 3))
    th.join()
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_cancelled_generation_leaves_a_usable_session(server, reference):
    sid = new_session(server)
    req = pb.GenerateRequest(session_id=sid, prompt=b"In the beginning", max_tokens=2000,
                             sampling=pb.SamplingParams(temperature=0.0))
    call = server.stub.Generate(req, timeout=300)
    got = []
    for msg in call:
        got.append(msg.token_id)
        if len(got) == 5:
            call.cancel()
            break
    time.sleep(0.5)
    s = server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
    assert not s.busy
    prompt_len = len(reference.tok.encode_bytes(b"In the beginning"))
    assert prompt_len + 5 <= s.tokens_consumed < prompt_len + 2000
    # The session continues exactly as the reference would from the tokens it holds.
    toks, _ = generate(server, sid, b"", 10, temperature=0.0)
    assert len(toks) > 0
    s2 = server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
    assert s2.tokens_consumed == s.tokens_consumed + len(toks)


def test_cancelled_score_leaves_a_usable_session(server, texts):
    sid = new_session(server)
    book = texts["kjv/Eze"].encode()
    call = server.stub.Score(iter([pb.ScoreRequest(session_id=sid, text=c)
                                   for c in split_random(book[:60000], random.Random(3), 3000, 6000)]), timeout=300)
    n = 0
    for resp in call:
        n += len(resp.tokens)
        if n > 200:
            call.cancel()
            break
    time.sleep(0.5)
    s = server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
    assert not s.busy and s.position >= 200
    toks, summary = score(server.stub, sid, [b"And the word of the LORD came unto me, saying,\n"])
    assert summary.tokens == len(toks) > 0 and toks[0].position == s.position


def export_tiny_as(cls, out_dir):
    """The tiny export's weights in a model of class cls (a BlockRecurrentTransformer subclass), exported with
    the tiny tokenizer into out_dir. Returns the tiny export's own directory."""
    import shutil
    from brt.config import BRTConfig
    from brt.export import export, load_meta
    tiny = os.path.join(ROOT, "tests", "data", "tiny")
    meta = load_meta(os.path.join(tiny, "brt.pt"))
    cfg = BRTConfig.from_dict(meta["config"])
    model = cls(cfg).eval()
    model.load_state_dict(torch.jit.load(os.path.join(tiny, "brt.pt"), map_location="cpu").state_dict(), strict=False)
    export(model, cfg, meta["tokenizer_sha256"], str(out_dir / "brt.pt"), name=meta["name"])
    shutil.copy(os.path.join(tiny, "tokenizer.model"), out_dir / "tokenizer.model")
    return tiny


def test_a_model_whose_packing_fails_runs_unpacked_and_says_why(tmp_path):
    """--cpu_packed_weights=true (auto, the default, packs only where XNNPACK pays off). An export whose pack_cpu
    fails halfway (here on purpose: it packs the logits' product, then raises) must not stop the server: it
    undoes the packing, logs why, and serves the same scores as a server told not to pack."""
    from brt.model import BlockRecurrentTransformer, prepack

    class Unpackable(BlockRecurrentTransformer):
        @torch.jit.export
        def pack_cpu(self) -> bool:
            self.packs = [prepack([self.embed.weight], [])]
            raise RuntimeError("no XNNPACK for this test")

    tiny = export_tiny_as(Unpackable, tmp_path)
    text = [b"In the beginning God created the heaven and the earth.\n" * 4]
    results = []
    for model_dir, flags in ((str(tmp_path), ("--cpu_packed_weights=true",)),
                             (tiny, ("--cpu_packed_weights=false",))):
        server = BrtServer(*flags, model_dir=model_dir)
        try:
            sid = server.stub.CreateSession(STUBS.pb.CreateSessionRequest(), timeout=10).id
            toks, summary = score(server.stub, sid, text)
            results.append([t.nll for t in toks])
            log = server.read_log()
        finally:
            server.stop()
        if model_dir == str(tmp_path):
            assert "packing failed, running unpacked" in log and "no XNNPACK for this test" in log, log[-2000:]
            assert "XNNPACK packed weights" not in log
    assert len(results[0]) > 10 and results[0] == results[1]


def test_an_export_whose_decode_math_differs_keeps_its_own_decode_step_and_says_why(tmp_path):
    """The server decodes in C++ from the export's parameters (--native_decode, on by default), after checking
    at load that it computes what the export computes. An export with the same parameters and other decode
    math (here its logits doubled) must fail that check: the server then runs the export's own decode step,
    logs by how much they differed, and generates what that export gives (the greedy chain of doubled logits
    is the plain one: the same tokens as the shipped tiny export, whose server decodes natively)."""
    from brt.model import BlockRecurrentTransformer, linear

    class Hotter(BlockRecurrentTransformer):
        def logits_of(self, h: torch.Tensor, groups: int = 1) -> torch.Tensor:
            return 2.0 * linear(self.final_norm(h), self.embed.weight, groups) * self.logit_scale

    tiny = export_tiny_as(Hotter, tmp_path)
    chains, logs = [], []
    for model_dir in (str(tmp_path), tiny):
        server = BrtServer(model_dir=model_dir)
        try:
            sid = server.stub.CreateSession(pb.CreateSessionRequest(), timeout=10).id
            toks, _ = generate(server, sid, prompt=b"And God said", max_tokens=24, temperature=0)
            chains.append([t.token_id for t in toks])
            logs.append(server.read_log())
        finally:
            server.stop()
    assert "the native decode step differs from the export's" in logs[0], logs[0][-2000:]
    assert ", native decode step" not in logs[0]
    assert ", native decode step" in logs[1], logs[1][-2000:]
    assert len(chains[0]) > 0 and chains[0] == chains[1]
