"""A hung snapshot store (issue 10, "store off the request path"): the real brt-server on loopback with a
real redis-server that is frozen with SIGSTOP mid-run.

Calls that must read the store (a session not loaded here) wait on the server's blocking pool, each on
its own pooled Redis connection and within its own deadline; calls that do not need the store (a loaded
session, server info, health) keep being answered at once. When Redis thaws, the stored session is
restored as if nothing happened.
"""
import json
import os
import signal
import threading
import time

import grpc

from conftest import STUBS, BrtServer, free_port, score
from http_util import Http
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


def test_a_hung_redis_costs_an_http_request_its_timeout():
    """The HTTP API's continuation of a stored session (session_id) reads the store under the request's
    --http_request_timeout_s: 503/504 when it passes, not the store's own timeouts; the health endpoint is
    answered meanwhile; after the thaw the session continues from where it was saved."""
    redis = RedisServer()
    port = free_port()
    server = BrtServer(f"--snapshot_store={redis.url()}", f"--http_listen=127.0.0.1:{port}",
                       "--http_request_timeout_s=2")
    http = Http(port, timeout=60)
    try:
        stored = server.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
        _, before = score(server.stub, stored, [LINE])
        server.stub.SaveSession(pb.SaveSessionRequest(session_id=stored, unload=True), timeout=30)
        body = {"prompt": "1:2 And", "max_tokens": 2, "temperature": 0, "session_id": stored}

        os.kill(redis.proc.pid, signal.SIGSTOP)
        result = {}

        def hung():
            t0 = time.monotonic()
            result["status"], result["body"] = http.post("/v1/completions", body)
            result["took"] = time.monotonic() - t0

        t = threading.Thread(target=hung)
        t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        assert http.get("/health") == (200, {"status": "ok"})
        assert time.monotonic() - t0 < 1.5
        t.join(30)
        # 503 (the session's lease could not be taken in time) or 504, naming the deadline.
        assert result["status"] in (503, 504), result
        assert "deadline" in json.dumps(result["body"]).lower(), result["body"]
        assert 1.5 < result["took"] < 4.5, result["took"]  # the request's 2 s, not the store's 2 x 10 s

        os.kill(redis.proc.pid, signal.SIGCONT)
        status, r = http.post("/v1/completions", body)
        assert status == 200, r
        choice = r["choices"][0]
        assert choice["session_id"] == stored
        assert choice["session_position"] > before.position  # continued from the saved position
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        server.stop()
        redis.stop()
