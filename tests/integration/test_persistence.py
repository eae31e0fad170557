"""End-to-end tests of session persistence: SaveSession / RestoreSession / ForkSession / DeleteSnapshot /
ListSnapshots, the file and Redis snapshot stores, and graceful shutdown, against the real binary.

Continuations are compared bitwise (float == float): on CPU a restored session runs the very same kernels on
the very same bytes as the uninterrupted one.

Environment: BRT_PERSIST_BOOK_BYTES caps the bytes of each book used (default: the whole book);
BRT_PERSIST_EXTRA_FLAGS adds flags to every server these tests start.
"""
import hashlib
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time

import grpc
import pytest

from services import RedisServer
from conftest import MODEL_DIR, ROOT, STUBS, BrtServer, corpus_docs, free_port, score

pb = STUBS.pb
BOOKS = ["kjv/Eze", "kjv/Acts"]
BOOK_BYTES = int(os.environ.get("BRT_PERSIST_BOOK_BYTES", "0"))
EXTRA_FLAGS = os.environ.get("BRT_PERSIST_EXTRA_FLAGS", "").split()


def Server(*flags, **kw):
    return BrtServer(*flags, *EXTRA_FLAGS, **kw)


@pytest.fixture(scope="module")
def books():
    out = {}
    for d in corpus_docs("test"):
        if d["name"] in BOOKS:
            data = d["text"].encode()
            if BOOK_BYTES:
                data = data[:BOOK_BYTES]
                data = data[:data.rfind(b"\n") + 1]
            out[d["name"]] = data
    return out


def halves(data):
    """The book split at the newline nearest its middle (a tokenization boundary)."""
    cut = data.rfind(b"\n", 0, len(data) // 2) + 1
    assert 0 < cut < len(data)
    return data[:cut], data[cut:]


def chunks(data, n=16384):
    return [data[i:i + n] for i in range(0, len(data), n)]


def store_flag(path):
    return f"--snapshot_store=file://{path}"


def new_session(server, **kw):
    return server.stub.CreateSession(pb.CreateSessionRequest(**kw), timeout=30)


def score_nlls(server, sid, data):
    toks, summary = score(server.stub, sid, chunks(data))
    return [t.nll for t in toks], [t.position for t in toks], summary


def generate(server, sid, max_tokens=40, prompt=b"", **sampling):
    req = pb.GenerateRequest(session_id=sid, prompt=prompt, max_tokens=max_tokens,
                             sampling=pb.SamplingParams(**sampling))
    msgs = list(server.stub.Generate(req, timeout=300))
    return [(m.token_id, m.logprob, m.position) for m in msgs[:-1]], msgs[-1]


def save(server, sid, **kw):
    return server.stub.SaveSession(pb.SaveSessionRequest(session_id=sid, **kw), timeout=60)


def restore(server, **kw):
    return server.stub.RestoreSession(pb.RestoreSessionRequest(**kw), timeout=60)


def expect_code(code, fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    assert e.value.code() == code, e.value.details()
    return e.value.details()


@pytest.fixture
def store(tmp_path):
    d = tmp_path / "store"
    d.mkdir()
    return d


@pytest.mark.parametrize("book", BOOKS)
def test_score_half_save_restart_restore_continues_bitwise(books, store, book):
    first, second = halves(books[book])
    a = Server(store_flag(store))
    try:
        ref = new_session(a, label="uninterrupted").id
        ref1, _, _ = score_nlls(a, ref, first)
        ref2, ref2_pos, ref_sum = score_nlls(a, ref, second)
        sid = new_session(a, label=book).id
        got1, _, _ = score_nlls(a, sid, first)
        assert got1 == ref1
        t0 = time.time()
        saved = save(a, sid)
        save_s = time.time() - t0
        assert saved.snapshot_key == sid and saved.size_bytes > 0 and not saved.snapshot
        assert (store / f"{sid}.snap").stat().st_size == saved.size_bytes
        assert a.stop() == 0
    finally:
        a.stop()
    b = Server(store_flag(store))
    try:
        t0 = time.time()
        s = restore(b, snapshot_key=sid)
        restore_s = time.time() - t0
        assert s.id == sid and s.label == book and s.position == 1 + len(got1)
        got2, got2_pos, got_sum = score_nlls(b, sid, second)
        assert got2_pos == ref2_pos
        assert got2 == ref2  # bitwise
        assert got_sum.total_nll == ref_sum.total_nll and got_sum.position == ref_sum.position
        print(f"\n{book}: snapshot {saved.size_bytes} bytes, save {save_s * 1e3:.1f} ms, "
              f"restore {restore_s * 1e3:.1f} ms (RPC round trips)")
    finally:
        b.stop()


def test_seeded_generation_continues_after_restart(books, store):
    prefix = halves(books["kjv/Acts"])[0][:4000]
    prefix = prefix[:prefix.rfind(b"\n") + 1]
    defaults = pb.SamplingParams(temperature=0.9, repetition_penalty=1.3, repetition_window=32, top_k=40,
                                 stop=["\n\n\n\n"])
    a = Server(store_flag(store))
    try:
        ref = new_session(a, default_sampling=defaults).id
        score_nlls(a, ref, prefix)
        want1, _ = generate(a, ref, 48, seed=11)
        want2, _ = generate(a, ref, 48, prompt=b" And", seed=12)
        sid = new_session(a, label="gen", default_sampling=defaults).id
        score_nlls(a, sid, prefix)
        save(a, sid)
    finally:
        assert a.stop() == 0
    b = Server(store_flag(store))
    try:
        s = restore(b, snapshot_key=sid)
        assert s.default_sampling == defaults and s.label == "gen"
        got1, _ = generate(b, sid, 48, seed=11)
        got2, _ = generate(b, sid, 48, prompt=b" And", seed=12)
        assert got1 == want1 and got2 == want2  # token ids, logprobs (bitwise), positions
    finally:
        b.stop()


def test_fork_generates_independently_and_parent_is_unchanged(books, store):
    prefix = books["kjv/Eze"][:3000]
    prefix = prefix[:prefix.rfind(b"\n") + 1]
    a = Server(store_flag(store))
    try:
        parent = new_session(a, label="parent").id
        control = new_session(a).id
        score_nlls(a, parent, prefix)
        score_nlls(a, control, prefix)
        fork = a.stub.ForkSession(pb.ForkSessionRequest(session_id=parent), timeout=30)
        assert fork.id != parent and fork.id.startswith("s_") and len(fork.id) == 34
        assert fork.position == a.stub.GetSession(pb.GetSessionRequest(session_id=parent)).position
        assert fork.label == "parent"
        # The fork runs ahead on its own.
        fork_out, _ = generate(a, fork.id, 40, temperature=1.0, seed=5)
        fork_more, _ = generate(a, fork.id, 40, temperature=1.0, seed=6)
        assert a.stub.GetSession(pb.GetSessionRequest(session_id=fork.id)).position == fork.position + 80
        # The parent is exactly where it was: it generates what an untouched copy generates.
        assert a.stub.GetSession(pb.GetSessionRequest(session_id=parent)).position == fork.position
        par_out, _ = generate(a, parent, 40, temperature=1.0, seed=5)
        ctl_out, _ = generate(a, control, 40, temperature=1.0, seed=5)
        assert par_out == ctl_out == fork_out  # same state, same seed
        par_more, _ = generate(a, parent, 40, temperature=1.0, seed=7)
        ctl_more, _ = generate(a, control, 40, temperature=1.0, seed=7)
        assert par_more == ctl_more and par_more != fork_more
    finally:
        a.stop()


def test_snapshot_bytes_restore_on_another_server(books, tmp_path):
    first, second = halves(books["kjv/Acts"])
    a = Server(store_flag(tmp_path / "a"))
    b = Server(store_flag(tmp_path / "b"))
    try:
        ref = new_session(a).id
        score_nlls(a, ref, first)
        want, _, _ = score_nlls(a, ref, second)
        sid = new_session(a).id
        score_nlls(a, sid, first)
        saved = save(a, sid, return_bytes=True, to_store=False)
        assert saved.snapshot_key == "" and len(saved.snapshot) == saved.size_bytes
        assert a.stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=10).snapshot_keys == []
        s = restore(b, snapshot=saved.snapshot)
        assert s.id == sid
        expect_code(grpc.StatusCode.ALREADY_EXISTS, restore, b, snapshot=saved.snapshot)
        copy = restore(b, snapshot=saved.snapshot, new_id=True)
        assert copy.id != sid and copy.position == s.position
        got, _, _ = score_nlls(b, sid, second)
        got_copy, _, _ = score_nlls(b, copy.id, second)
        assert got == want and got_copy == want
        # Store round trip, listing, deleting.
        save(b, sid)
        assert list(b.stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=10).snapshot_keys) == [sid]
        b.stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_key=sid), timeout=10)
        expect_code(grpc.StatusCode.NOT_FOUND, b.stub.DeleteSnapshot,
                    pb.DeleteSnapshotRequest(snapshot_key=sid), timeout=10)
        expect_code(grpc.StatusCode.NOT_FOUND, restore, b, snapshot_key="s_" + "0" * 32)
        expect_code(grpc.StatusCode.INVALID_ARGUMENT, restore, b, snapshot_key="../../etc/passwd")
        expect_code(grpc.StatusCode.NOT_FOUND, save, b, "s_" + "1" * 32)
    finally:
        a.stop()
        b.stop()


def _other_model_flags():
    """Flags that serve a different model: tests/data/tiny or model/artifacts, whichever holds another
    export than MODEL_DIR, else the same export in bfloat16 (other dtype: a snapshot of it must not load)."""
    def digest(d):
        p = os.path.join(d, "brt.pt")
        return hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.exists(p) else None
    mine = digest(MODEL_DIR)
    for other in (os.path.join(ROOT, "tests", "data", "tiny"), os.path.join(ROOT, "model", "artifacts")):
        if digest(other) not in (None, mine):
            return {"model_dir": other}, []
    return {}, ["--dtype=bfloat16"]


def test_corrupt_and_foreign_snapshots_are_refused(books, tmp_path):
    text = books["kjv/Eze"][:2000]
    text = text[:text.rfind(b"\n") + 1]
    a = Server(store_flag(tmp_path / "a"))
    kw, flags = _other_model_flags()
    other = Server(store_flag(tmp_path / "o"), *flags, **kw)
    key_file = tmp_path / "key"
    key_file.write_bytes(os.urandom(32).hex().encode() + b"\n")
    signed = Server(store_flag(tmp_path / "s"), f"--snapshot_hmac_key_file={key_file}")
    try:
        sid = new_session(a).id
        score_nlls(a, sid, text)
        good = save(a, sid, return_bytes=True, to_store=False).snapshot
        a.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=10)
        for n in (0, 10, 31, 64, len(good) // 2, len(good) - 1):
            msg = expect_code(grpc.StatusCode.DATA_LOSS, restore, a, snapshot=good[:n])
        for bit in (8 * 9, 8 * 40 + 3, 8 * (len(good) // 2) + 5, 8 * (len(good) - 40), 8 * len(good) - 1):
            bad = bytearray(good)
            bad[bit // 8] ^= 1 << (bit % 8)
            msg = expect_code(grpc.StatusCode.DATA_LOSS, restore, a, snapshot=bytes(bad))
        expect_code(grpc.StatusCode.DATA_LOSS, restore, a, snapshot=good + b"\0")
        # A corrupt file in the store: DATA_LOSS on restore and on transparent first use.
        (tmp_path / "a" / f"{sid}.snap").write_bytes(good[:-7])
        expect_code(grpc.StatusCode.DATA_LOSS, restore, a, snapshot_key=sid)
        expect_code(grpc.StatusCode.DATA_LOSS, a.stub.GetSession, pb.GetSessionRequest(session_id=sid),
                    timeout=10)
        # Another model.
        msg = expect_code(grpc.StatusCode.FAILED_PRECONDITION, restore, other, snapshot=good)
        assert "fingerprint" in msg or "dtype" in msg or "dims" in msg, msg
        foreign_sid = new_session(other).id
        if not flags:  # (bfloat16 runs on CPU only for the memory, not the model: save a fresh session)
            score_nlls(other, foreign_sid, text)
        foreign = save(other, foreign_sid, return_bytes=True, to_store=False).snapshot
        expect_code(grpc.StatusCode.FAILED_PRECONDITION, restore, a, snapshot=foreign)
        # An intact snapshot (valid checksum) whose fingerprint names another model.
        fp_len = struct.unpack_from("<I", good, 32)[0]
        forged = bytearray(good[:-32])
        forged[36] = ord("0") if forged[36] != ord("0") else ord("1")
        assert fp_len == 64
        forged += hashlib.sha256(forged).digest()
        msg = expect_code(grpc.StatusCode.FAILED_PRECONDITION, restore, a, snapshot=bytes(forged))
        assert "fingerprint" in msg, msg
        # A server with a key refuses unsigned snapshots; its own signed ones load on it only.
        expect_code(grpc.StatusCode.FAILED_PRECONDITION, restore, signed, snapshot=good)
        ssid = new_session(signed).id
        score_nlls(signed, ssid, text)
        sgood = save(signed, ssid, return_bytes=True, to_store=False).snapshot
        assert len(sgood) == len(good) + 32  # the HMAC
        assert restore(signed, snapshot=sgood, new_id=True).position == 1 + len(score_nlls(a, new_session(a).id,
                                                                                        text)[0])
        forged = bytearray(sgood)
        forged[100] ^= 1
        expect_code(grpc.StatusCode.DATA_LOSS, restore, signed, snapshot=bytes(forged))
        # Everyone keeps serving, and the good snapshot still restores exactly.
        s = restore(a, snapshot=good)
        assert s.id == sid
        for srv in (a, other, signed):
            assert srv.proc.poll() is None
            r = srv.health.Check(STUBS.health.HealthCheckRequest(service=""), timeout=5)
            assert r.status == STUBS.health.HealthCheckResponse.SERVING
        score_nlls(a, sid, b"And it came to pass.\n")
    finally:
        a.stop()
        other.stop()
        signed.stop()


@pytest.fixture
def redis_url():
    redis = RedisServer()
    yield redis.url()
    redis.stop()


def test_two_servers_share_sessions_through_redis(books, redis_url):
    first, second = halves(_lines(books["kjv/Eze"], 0, 40000))  # (the whole-book runs are above)
    a = Server(f"--snapshot_store={redis_url}")
    b = Server(f"--snapshot_store={redis_url}")
    try:
        ref = new_session(a).id
        score_nlls(a, ref, first)
        want, _, _ = score_nlls(a, ref, second)
        sid = new_session(a, label="shared").id
        score_nlls(a, sid, first)
        saved = save(a, sid)
        assert saved.snapshot_key == sid
        assert sid in b.stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=10).snapshot_keys
        # Live on a (which holds its lease): b may not load it under the same id, only a copy.
        expect_code(grpc.StatusCode.UNAVAILABLE, b.stub.RestoreSession,
                    pb.RestoreSessionRequest(snapshot_key=sid), timeout=30)
        copy = restore(b, snapshot_key=sid, new_id=True)
        assert copy.id != sid
        # Unloaded from a (saved, freed, lease given up), it moves to b.
        a.stub.SaveSession(pb.SaveSessionRequest(session_id=sid, unload=True), timeout=30)
        s = restore(b, snapshot_key=sid)
        assert s.label == "shared"
        got, _, _ = score_nlls(b, sid, second)
        assert got == want
        # Transparent restore on first use: a third session saved on b is used on a by id alone.
        sid2 = new_session(b).id
        score_nlls(b, sid2, first)
        save(b, sid2)
        expect_code(grpc.StatusCode.UNAVAILABLE, a.stub.GetSession, pb.GetSessionRequest(session_id=sid2),
                    timeout=30)
        b.stub.SaveSession(pb.SaveSessionRequest(session_id=sid2, unload=True), timeout=30)
        got2, _, _ = score_nlls(a, sid2, second)
        assert got2 == want
    finally:
        a.stop()
        b.stop()


def test_sigterm_under_load_exits_zero_and_every_session_restores(books, store):
    eze, acts = books["kjv/Eze"], books["kjv/Acts"]
    prefix = acts[:3000]
    prefix = prefix[:prefix.rfind(b"\n") + 1]
    rest = acts[len(prefix):len(prefix) + 3000]
    rest = rest[:rest.rfind(b"\n") + 1]
    a = Server(store_flag(store))
    idle, busy_score, busy_gen = [], [], []
    try:
        ref = new_session(a).id
        score_nlls(a, ref, prefix)
        want, _, _ = score_nlls(a, ref, rest)
        a.stub.DeleteSession(pb.DeleteSessionRequest(session_id=ref), timeout=10)
        for _ in range(3):
            sid = new_session(a).id
            score_nlls(a, sid, prefix)
            idle.append(sid)
        busy_score = [new_session(a).id for _ in range(2)]
        busy_gen = [new_session(a).id for _ in range(2)]
        results = {}

        def run_score(sid):
            try:
                toks, summary = score(a.stub, sid, chunks(eze, 4096))
                results[sid] = ("ok", len(toks))
            except grpc.RpcError as e:
                results[sid] = (e.code(), None)

        def run_gen(sid):
            try:
                toks, last = generate(a, sid, 4000, temperature=1.0, seed=3)
                results[sid] = ("ok", last.finish_reason)
            except grpc.RpcError as e:
                results[sid] = (e.code(), None)

        threads = [threading.Thread(target=run_score, args=(s,)) for s in busy_score]
        threads += [threading.Thread(target=run_gen, args=(s,)) for s in busy_gen]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until every busy session has made progress
            pos = [a.stub.GetSession(pb.GetSessionRequest(session_id=s), timeout=10).position
                   for s in busy_score + busy_gen]
            if all(p > 1 for p in pos):
                break
            time.sleep(0.05)
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(60) == 0
        for t in threads:
            t.join(60)
        for sid in busy_score:
            assert results[sid][0] in ("ok", grpc.StatusCode.UNAVAILABLE), results[sid]
        for sid in busy_gen:
            assert results[sid][0] == "ok", results[sid]
            assert results[sid][1] in (pb.FINISH_REASON_CANCELLED, pb.FINISH_REASON_LENGTH)
        assert "saved 7 sessions" in a.read_log()
    finally:
        a.stop()
    b = Server(store_flag(store))
    try:
        keys = set(b.stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=10).snapshot_keys)
        assert keys == set(idle + busy_score + busy_gen)
        for sid in busy_score + busy_gen:  # transparently restored on first use
            assert b.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30).position > 1
        for sid in idle:
            got, _, _ = score_nlls(b, sid, rest)
            assert got == want
    finally:
        b.stop()


def _info(server):
    return server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)


def _lines(data, start, n):
    t = data[start:start + n]
    return t[:t.rfind(b"\n") + 1]


def test_small_memory_budget_evicts_and_restores_100_sessions(books, store, tmp_path):
    acts = books["kjv/Acts"]
    prefixes = [_lines(acts, 500 * i, 400) for i in range(5)]
    cont = _lines(books["kjv/Eze"], 0, 300)
    a = Server(store_flag(tmp_path / "ref"))
    try:
        state_bytes = _info(a).model.state_bytes_per_session
        want = []
        for p in prefixes:
            sid = new_session(a).id
            score_nlls(a, sid, p)
            want.append(score_nlls(a, sid, cont)[0])
    finally:
        a.stop()
    budget = 10 * state_bytes
    b = Server(store_flag(store), f"--session_memory_budget_bytes={budget}")
    try:
        ids = []
        for i in range(100):
            sid = new_session(b, label=f"s{i}").id
            score_nlls(b, sid, prefixes[i % 5])
            ids.append(sid)
        deadline = time.time() + 30
        while _info(b).executor.sessions > 10 and time.time() < deadline:
            time.sleep(0.1)
        assert _info(b).executor.sessions <= 10
        stored = set(b.stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=10).snapshot_keys)
        assert len(stored & set(ids)) >= 90
        for i, sid in enumerate(ids):  # each comes back transparently, exactly where it was
            got, pos, _ = score_nlls(b, sid, cont)
            assert got == want[i % 5], i
            assert b.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10).label == f"s{i}"
        assert b.proc.poll() is None
    finally:
        b.stop()


def test_idle_ttl_evicts_and_next_use_restores(books, store):
    prefix = _lines(books["kjv/Acts"], 0, 1500)
    cont = _lines(books["kjv/Acts"], len(prefix), 600)
    a = Server(store_flag(store), "--session_idle_ttl_s=1")
    try:
        ref = new_session(a).id
        score_nlls(a, ref, prefix)
        want = score_nlls(a, ref, cont)[0]
        a.stub.DeleteSession(pb.DeleteSessionRequest(session_id=ref), timeout=10)
        sid = new_session(a).id
        score_nlls(a, sid, prefix)
        deadline = time.time() + 20
        while _info(a).executor.sessions > 0 and time.time() < deadline:
            time.sleep(0.1)
        assert _info(a).executor.sessions == 0
        assert sid in a.stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=10).snapshot_keys
        assert score_nlls(a, sid, cont)[0] == want
        # DeleteSession also removes the snapshot: the id does not come back.
        a.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=10)
        expect_code(grpc.StatusCode.NOT_FOUND, a.stub.GetSession, pb.GetSessionRequest(session_id=sid),
                    timeout=10)
    finally:
        a.stop()


def test_autosave_bounds_what_a_crash_loses(books, store):
    text = _lines(books["kjv/Eze"], 0, 6000)
    n_blocks = 2
    a = Server(store_flag(store), f"--autosave_every_blocks={n_blocks}")
    try:
        W = _info(a).model.window
        sid = new_session(a).id
        _, pos, summary = score_nlls(a, sid, text)
        time.sleep(1.0)  # a few housekeeping rounds
        a.proc.send_signal(signal.SIGKILL)  # a crash: no shutdown save
        a.proc.wait(30)
    finally:
        a.stop()
    b = Server(store_flag(store))
    try:
        s = b.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)
        lost = summary.position - s.position
        assert 0 <= lost < n_blocks * W, (summary.position, s.position)
        assert s.position > 1
    finally:
        b.stop()
