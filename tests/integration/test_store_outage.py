"""A hung snapshot store (issue 10, "store off the request path"): the real brt-server on loopback with a
real redis-server that is frozen with SIGSTOP mid-run.

Calls that must read the store (a session not loaded here) wait on the server's blocking pool, each on
its own pooled Redis connection and within its own deadline; calls that do not need the store (a loaded
session, server info, health) keep being answered at once. When Redis thaws, the stored session is
restored as if nothing happened.
"""
import os
import signal
import threading
import time

import grpc

from conftest import STUBS, BrtServer, score
from services import RedisServer

pb = STUBS.pb
LINE = b"1:1 In the beginning God created the heaven and the earth.\n"


def test_a_hung_redis_delays_only_the_calls_that_need_it():
    redis = RedisServer()
    server = BrtServer(f"--snapshot_store={redis.url()}", "--blocking_threads=4")
    try:
        loaded = server.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
        score(server.stub, loaded, [LINE])
        stored = server.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
        _, before = score(server.stub, stored, [LINE])
        server.stub.SaveSession(pb.SaveSessionRequest(session_id=stored, unload=True), timeout=30)

        os.kill(redis.proc.pid, signal.SIGSTOP)
        # More store-bound calls than blocking threads, each with a 3 s deadline: the session not loaded
        # here, and ids that look valid but exist nowhere (the attack: any valid-looking id).
        codes, took = [], []
        lock = threading.Lock()

        def hung_call(sid):
            t0 = time.monotonic()
            try:
                server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=3)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            with lock:
                codes.append(code)
                took.append(time.monotonic() - t0)

        ids = [stored] + ["s_" + os.urandom(16).hex() for _ in range(11)]
        threads = [threading.Thread(target=hung_call, args=(sid,)) for sid in ids]
        for t in threads:
            t.start()
        time.sleep(0.5)  # they are all waiting on Redis (or for a blocking thread) now

        # Everything that does not need the store is served at once, again and again.
        worst = 0.0
        for _ in range(3):
            t0 = time.monotonic()
            server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
            info = server.stub.GetSession(pb.GetSessionRequest(session_id=loaded), timeout=5)
            toks, summary = score(server.stub, loaded, [LINE], timeout=5)
            health = server.health.Check(STUBS.health.HealthCheckRequest(service=""), timeout=5)
            worst = max(worst, time.monotonic() - t0)
            assert summary.tokens == len(toks) > 0 and info.id == loaded
            assert health.status == STUBS.health.HealthCheckResponse.SERVING
        assert worst < 1.5, f"calls that need no store took {worst:.2f} s while Redis hung"

        for t in threads:
            t.join(30)
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * len(ids), codes
        assert max(took) < 4.5, took  # each ended at its own deadline, none queued behind another

        os.kill(redis.proc.pid, signal.SIGCONT)
        info = server.stub.GetSession(pb.GetSessionRequest(session_id=stored), timeout=30)
        assert info.position == before.position  # restored exactly where it was saved
        toks, summary = score(server.stub, stored, [LINE])
        assert summary.tokens == len(toks) > 0
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        server.stop()
        redis.stop()
