"""Rewinding and forking a session at an earlier position (RewindSession, ForkSession.position), end to end:
the result must equal, bit for bit, a session that read only the prefix (compared on the exact float scores
of the text that follows and on greedy generation)."""
import grpc
import pytest

from conftest import STUBS, BrtServer, score

pb = STUBS.pb


@pytest.fixture(scope="module")
def rs():
    # A long horizon (16 checkpoints, one per block) so that tests can go back across many blocks.
    s = BrtServer("--checkpoints_per_session=16", "--checkpoint_interval_blocks=1")
    yield s
    s.stop()


def doc(texts, n_bytes=6000):
    for name in sorted(texts):
        t = texts[name].encode()
        if len(t) >= n_bytes and t.count(b"\n") > 40:
            t = t[:n_bytes]
            return t[:t.rfind(b"\n") + 1]
    raise AssertionError("no long document")


def new(s):
    return s.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id


def info(s, sid):
    return s.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)


def line_starts(toks, text):
    """(position, byte offset) of each token that starts a line: prefixes cut there tokenize the same."""
    out = []
    for t in toks:
        if t.byte_begin > 0 and text[t.byte_begin - 1:t.byte_begin] == b"\n":
            out.append((t.position, t.byte_begin))
    return out


def continuation(s, sid, rest):
    toks, _ = score(s.stub, sid, [rest])
    gen = list(s.stub.Generate(pb.GenerateRequest(session_id=sid, max_tokens=12,
                                                  sampling=pb.SamplingParams(temperature=0)), timeout=120))
    return [t.nll for t in toks], [m.token_id for m in gen[:-1]]


def reference(s, text, cut, rest):
    sid = new(s)
    score(s.stub, sid, [text[:cut]])
    return continuation(s, sid, rest)


def test_rewind_equals_reading_the_prefix_across_many_blocks(rs, texts):
    text = doc(texts, 14000)
    sid = new(rs)
    toks, summary = score(rs.stub, sid, [text])
    end = info(rs, sid).position
    earliest = info(rs, sid).earliest_rewind_position
    assert earliest < end - 64 * 10  # the horizon spans many blocks (16 checkpoints)
    starts = [(p, b) for p, b in line_starts(toks, text) if p >= earliest]
    # Far back, near the middle and close to the end of the horizon, on and off block boundaries.
    picks = [starts[0], starts[len(starts) // 2], starts[-1]]
    rest = b"And it came to pass after these things, that the word came.\n"
    for position, cut in picks:
        a = rs.stub.ForkSession(pb.ForkSessionRequest(session_id=sid), timeout=30).id
        r = rs.stub.RewindSession(pb.RewindSessionRequest(session_id=a, position=position), timeout=120)
        assert r.position == position and r.tokens_consumed == position - 1
        assert continuation(rs, a, rest) == reference(rs, text, cut, rest), position
    # The original session never moved.
    assert info(rs, sid).position == end


def test_fork_at_a_position_leaves_the_original_untouched(rs, texts):
    text = doc(texts, 3000)
    sid = new(rs)
    toks, _ = score(rs.stub, sid, [text])
    position, cut = line_starts(toks, text)[-3]
    rest = b"Then said he unto them,\n"
    before = info(rs, sid)
    child = rs.stub.ForkSession(pb.ForkSessionRequest(session_id=sid, position=position), timeout=120)
    assert child.id != sid and child.position == position
    assert info(rs, sid).position == before.position
    assert continuation(rs, child.id, rest) == reference(rs, text, cut, rest)
    # The original continues as if nothing happened: like a copy of it taken before the fork.
    twin = rs.stub.ForkSession(pb.ForkSessionRequest(session_id=sid), timeout=30).id
    assert continuation(rs, sid, rest) == continuation(rs, twin, rest)


def test_rewind_to_the_start_and_to_now(rs):
    sid = new(rs)
    score(rs.stub, sid, [b"In the beginning God created the heaven and the earth.\n"])
    now = info(rs, sid).position
    assert rs.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, position=now), timeout=30).position == now
    r = rs.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, position=1), timeout=30)
    assert r.position == 1 and r.tokens_consumed == 0
    rest = b"And the earth was without form, and void.\n"
    assert continuation(rs, sid, rest) == continuation(rs, new(rs), rest)


def test_beyond_the_horizon_and_ahead_are_refused_clearly(texts):
    s = BrtServer("--checkpoints_per_session=2", "--checkpoint_interval_blocks=1")
    try:
        sid = new(s)
        score(s.stub, sid, [doc(texts, 4000)])
        i = info(s, sid)
        assert i.earliest_rewind_position > 1
        with pytest.raises(grpc.RpcError) as e:
            s.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, position=2), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"the earliest reachable position is {i.earliest_rewind_position}" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            s.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, position=i.position + 1), timeout=30)
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE and f"at position {i.position}" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            s.stub.ForkSession(pb.ForkSessionRequest(session_id=sid, position=2), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # Nothing changed.
        assert info(s, sid).position == i.position
    finally:
        s.stop()
    off = BrtServer("--checkpoints_per_session=0")
    try:
        sid = new(off)
        score(off.stub, sid, [b"In the beginning\n"])
        assert info(off, sid).earliest_rewind_position == 0
        with pytest.raises(grpc.RpcError) as e:
            off.stub.RewindSession(pb.RewindSessionRequest(session_id=sid, position=1), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        off.stop()


def test_rewind_after_save_and_restore(rs, texts):
    text = doc(texts, 5000)
    first, second = text[:2000], text[2000:]
    first = first[:first.rfind(b"\n") + 1]
    second = text[len(first):]
    sid = new(rs)
    score(rs.stub, sid, [first])
    saved = rs.stub.SaveSession(pb.SaveSessionRequest(session_id=sid, to_store=False, return_bytes=True), timeout=30)
    restored = rs.stub.RestoreSession(pb.RestoreSessionRequest(snapshot=saved.snapshot, new_id=True), timeout=30)
    assert restored.earliest_rewind_position == restored.position  # the horizon starts at the restore
    toks, _ = score(rs.stub, restored.id, [second])
    # Rewind to a line start inside the part read after the restore.
    starts = [(p, b) for p, b in line_starts(toks, second)]
    position, cut = starts[len(starts) // 2]
    rs.stub.RewindSession(pb.RewindSessionRequest(session_id=restored.id, position=position), timeout=120)
    rest = b"And he said,\n"
    # The reference reads the same prefix the same way: `first` in one call, then the rest up to the cut.
    ref = new(rs)
    score(rs.stub, ref, [first])
    score(rs.stub, ref, [second[:cut]])
    assert continuation(rs, restored.id, rest) == continuation(rs, ref, rest)
    # Before the restore point is beyond the horizon.
    with pytest.raises(grpc.RpcError) as e:
        rs.stub.RewindSession(pb.RewindSessionRequest(session_id=restored.id, position=2), timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_cli_and_python_client_rewind_and_fork_at(rs):
    import os
    import subprocess
    import sys
    from conftest import BUILD, ROOT
    sys.path.insert(0, os.path.join(ROOT, "client", "python"))
    from brt_client import Client
    c = Client(rs.address)
    sid = c.create_session().id
    score(rs.stub, sid, [b"In the beginning God created the heaven and the earth.\n"])
    end = info(rs, sid).position
    child = c.fork_session(sid, position=3)
    assert child.position == 3 and info(rs, sid).position == end
    assert c.rewind_session(sid, 2).position == 2
    brt = os.path.join(BUILD, "bin", "brt")
    out = subprocess.run([brt, "rewind", child.id, "2", f"--server={rs.address}", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"position": "2"' in out.stdout
    bad = subprocess.run([brt, "rewind", child.id, "99", f"--server={rs.address}"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "ahead of session" in bad.stderr
    out = subprocess.run([brt, "fork", sid, "--position=1", f"--server={rs.address}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
