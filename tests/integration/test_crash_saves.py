"""kill -9 of brt-server itself while it saves (issue 10): the real binary on loopback, the shipped model and
its file snapshot store, SIGKILLed at random moments while clients save sessions in a loop and a Score
stream autosaves every block. After each kill a new server on the same store must restore every snapshot
it finds (0 corrupt or partial ones) and must have removed the temporary files of the interrupted writes.

CI runs BRT_CRASH_KILLS kills (default 4: each costs a server start, 5-10 s on 2 cores); the long
version is the same test with more, e.g.
  BRT_CRASH_KILLS=300 /usr/bin/python3 -m pytest -q tests/integration/test_crash_saves.py
(a seed is printed; BRT_CRASH_SEED repeats a run).
"""
import os
import random
import tempfile
import threading
import time

import grpc

from conftest import STUBS, BrtServer, corpus_docs

pb = STUBS.pb
SESSIONS = 6


def _text():
    for d in corpus_docs("test"):
        if d["name"] == "kjv/Acts":
            return d["text"].encode()
    raise AssertionError("kjv/Acts is not in the test split")


def _verify_and_reload(server, store):
    """Every snapshot in `store` restores on `server` (restore on first use); returns their keys."""
    names = os.listdir(store)
    leftovers = [n for n in names if n.startswith(".tmp")]
    assert not leftovers, f"temporary files survived a restart: {leftovers}"
    keys = sorted(n[:-len(".snap")] for n in names if n.endswith(".snap"))
    for key in keys:
        info = server.stub.GetSession(pb.GetSessionRequest(session_id=key), timeout=60)
        assert info.id == key and info.position >= 1
    return keys


def _saver(server, ids, stop, rng):
    while not stop.is_set():
        try:
            server.stub.SaveSession(pb.SaveSessionRequest(session_id=rng.choice(ids)), timeout=10)
        except grpc.RpcError:
            return  # the server died (or the session is busy scoring: try another)


def _scorer(server, sid, text, stop):
    def requests():
        yield pb.ScoreRequest(session_id=sid, omit_tokens=True, text=text[:4096])
        i = 4096
        while not stop.is_set() and i < len(text):
            yield pb.ScoreRequest(text=text[i:i + 4096])
            i += 4096
    try:
        for _ in server.stub.Score(requests(), timeout=60):
            pass
    except grpc.RpcError:
        pass


def test_kill_9_during_saves_leaves_only_whole_snapshots():
    kills = int(os.environ.get("BRT_CRASH_KILLS", "4"))
    seed = int(os.environ.get("BRT_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"crash test: {kills} kills, BRT_CRASH_SEED={seed}")
    rng = random.Random(seed)
    text = _text()
    store = tempfile.mkdtemp(prefix="brt-crash-")
    flags = (f"--snapshot_store=file://{store}", "--autosave_every_blocks=1", "--threads=1")
    restored_total, t_start = 0, time.time()
    for k in range(kills):
        server = BrtServer(*flags)
        try:
            keys = _verify_and_reload(server, store)
            restored_total += len(keys)
            ids = list(keys)
            while len(ids) < SESSIONS:
                ids.append(server.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id)
            stop = threading.Event()
            scoring = rng.choice(ids)
            workers = [threading.Thread(target=_scorer, args=(server, scoring, text, stop))]
            workers += [threading.Thread(target=_saver, args=(server, [i for i in ids if i != scoring], stop,
                                                             random.Random(rng.random())))
                        for _ in range(3)]
            for w in workers:
                w.start()
            time.sleep(rng.uniform(0.2, 1.5))
            server.proc.kill()  # SIGKILL, mid-write for some of the saves in flight
            server.proc.wait(10)
            stop.set()
            for w in workers:
                w.join(30)
        finally:
            server.stop()
    # The last kill's snapshots too.
    server = BrtServer(*flags)
    try:
        restored_total += len(_verify_and_reload(server, store))
    finally:
        server.stop()
    print(f"crash test: {kills} kills in {time.time() - t_start:.0f} s, {restored_total} snapshot restores, "
          "0 corrupt or partial")
    assert restored_total >= kills  # the kills did land while snapshots existed
