"""End-to-end tests of brt-server's Prometheus metrics: the real binary, real gRPC, its /metrics endpoint
(on a free loopback port per test server, see conftest.BrtServer), `promtool check metrics`, and a real
Prometheus server (Debian's /usr/bin/prometheus) that scrapes it and answers queries.

Counters are checked against the work done: exact deltas of the scraped values around each call.
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from conftest import ROOT, STUBS, BrtServer, free_port, score, split_random

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from prom_query import query, wait_for  # noqa: E402

pb = STUBS.pb
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape_text(server):
    with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def parse(text):
    """{(name, frozenset(labels.items())): value} for every sample of a text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparsable exposition line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def scrape(server):
    return parse(scrape_text(server))


def value(samples, metric, /, **labels):
    """The sample's value; 0 when the series does not exist yet (counters created on first use)."""
    return samples.get((metric, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


def new_session(server):
    return server.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id


def excerpt(texts, name, n_bytes):
    t = texts[name].encode()[:n_bytes]
    return t[:t.rfind(b"\n") + 1]


def code_of(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code()


def test_metrics_endpoint_is_on_its_own_port(server):
    assert server.metrics_address and server.metrics_address != "127.0.0.1:9464"
    assert server.metrics_address != server.address
    text = scrape_text(server)
    assert "# TYPE brt_scored_tokens_total counter" in text
    assert "process_resident_memory_bytes" in text


def test_scored_tokens_counter_is_exact(server, reference, texts):
    # Several windows, random chunking: tokens are scored by score_blocks and by single-token decode steps
    # (mid-block starts and the partial last block), all of which must be counted exactly once.
    data = excerpt(texts, "kjv/Acts", 3000)
    n = len(reference.tok.encode_bytes(data))
    W = reference.meta["window"]
    assert n >= 5 * W
    sid = new_session(server)
    before = scrape(server)
    toks, summary = score(server.stub, sid, split_random(data, random.Random(3), 1, 97))
    after = scrape(server)
    assert summary.tokens == len(toks) == n
    assert value(after, "brt_scored_tokens_total") - value(before, "brt_scored_tokens_total") == n
    # A second call on the same session starts mid-block: still exact.
    more = excerpt(texts, "kjv/Acts", 3500)[len(data):]
    m = len(reference.tok.encode_bytes(more))
    _, summary2 = score(server.stub, sid, [more], omit_tokens=True)
    again = scrape(server)
    assert summary2.tokens == m > 0
    assert value(again, "brt_scored_tokens_total") - value(after, "brt_scored_tokens_total") == m
    # Whole blocks and spans (the text a chunk leaves mid-block, fed at once) were both observed (rows
    # histogram and step duration by kind); decode steps are checked with generation below.
    for kind in ("score_block", "span"):
        d = (value(after, "brt_executor_batch_rows_count", kind=kind)
             - value(before, "brt_executor_batch_rows_count", kind=kind))
        assert d > 0, kind
        assert (value(after, "brt_executor_step_duration_seconds_count", kind=kind)
                - value(before, "brt_executor_step_duration_seconds_count", kind=kind)) == d
        assert value(after, "brt_executor_batch_rows_sum", kind=kind) >= \
            value(after, "brt_executor_batch_rows_count", kind=kind)
    assert (value(after, "brt_requests_total", method="Score", code="OK")
            - value(before, "brt_requests_total", method="Score", code="OK")) == 1
    assert (value(after, "brt_request_duration_seconds_count", method="Score")
            - value(before, "brt_request_duration_seconds_count", method="Score")) == 1
    assert value(after, "brt_queue_wait_seconds_count") > value(before, "brt_queue_wait_seconds_count")
    assert value(after, "brt_queue_depth") == 0  # the call has finished


def test_generated_tokens_and_latency_histograms(server):
    sid = new_session(server)
    k = 12
    before = scrape(server)
    req = pb.GenerateRequest(session_id=sid, prompt=b"In the beginning", max_tokens=k,
                             sampling=pb.SamplingParams(temperature=1.0, seed=5))
    msgs = list(server.stub.Generate(req, timeout=120))
    after = scrape(server)
    final = msgs[-1]
    streamed = len(msgs) - 1
    assert final.generated_tokens == streamed
    if final.finish_reason == pb.FINISH_REASON_LENGTH:
        assert streamed == k
    delta = value(after, "brt_generated_tokens_total") - value(before, "brt_generated_tokens_total")
    assert delta == streamed
    assert streamed >= 1
    assert (value(after, "brt_time_to_first_token_seconds_count")
            - value(before, "brt_time_to_first_token_seconds_count")) == 1
    assert (value(after, "brt_inter_token_latency_seconds_count")
            - value(before, "brt_inter_token_latency_seconds_count")) == streamed - 1
    assert (value(after, "brt_requests_total", method="Generate", code="OK")
            - value(before, "brt_requests_total", method="Generate", code="OK")) == 1
    # The prompt went in as one span; every generated token was then fed by a decode step (the session
    # holds them all).
    for kind, want in (("span", 1), ("decode", streamed)):
        d = (value(after, "brt_executor_step_duration_seconds_count", kind=kind)
             - value(before, "brt_executor_step_duration_seconds_count", kind=kind))
        assert d == want, kind


def test_refused_requests_count_by_method_and_code(server):
    sid = new_session(server)
    cases = [
        ("GetSession", "NOT_FOUND",
         lambda: server.stub.GetSession(pb.GetSessionRequest(session_id="s_" + "0" * 32), timeout=10)),
        ("DeleteSession", "INVALID_ARGUMENT",
         lambda: server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=""), timeout=10)),
        ("Score", "INVALID_ARGUMENT", lambda: score(server.stub, sid, [b"x\n"], top_k=1000)),
        ("Score", "NOT_FOUND", lambda: score(server.stub, "s_" + "1" * 32, [b"x\n"])),
        ("Generate", "NOT_FOUND",
         lambda: list(server.stub.Generate(pb.GenerateRequest(session_id="s_" + "2" * 32, max_tokens=2),
                                           timeout=30))),
        ("Generate", "INVALID_ARGUMENT",
         lambda: list(server.stub.Generate(pb.GenerateRequest(session_id=sid, max_tokens=0), timeout=30))),
        ("ForkSession", "NOT_FOUND",
         lambda: server.stub.ForkSession(pb.ForkSessionRequest(session_id="s_" + "3" * 32), timeout=10)),
        ("RestoreSession", "INVALID_ARGUMENT",
         lambda: server.stub.RestoreSession(pb.RestoreSessionRequest(), timeout=10)),
    ]
    for method, code, call in cases:
        before = scrape(server)
        got = code_of(call)
        assert got.name == code, (method, got)
        after = scrape(server)
        d = (value(after, "brt_requests_total", method=method, code=code)
             - value(before, "brt_requests_total", method=method, code=code))
        assert d == 1, (method, code)
        ok = (value(after, "brt_requests_total", method=method, code="OK")
              - value(before, "brt_requests_total", method=method, code="OK"))
        assert ok == 0, (method, code)


def test_gauges_and_info(server):
    info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    s = scrape(server)
    assert value(s, "brt_queue_capacity") == info.limits.max_queue
    assert value(s, "brt_sessions_capacity") == info.limits.max_sessions
    n0 = value(s, "brt_sessions_resident")
    assert n0 == len(server.stub.ListSessions(pb.ListSessionsRequest(), timeout=10).sessions)
    a, b = new_session(server), new_session(server)
    s = scrape(server)
    assert value(s, "brt_sessions_resident") == n0 + 2
    assert value(s, "brt_session_state_bytes", location="device") == \
        (n0 + 2) * info.model.state_bytes_per_session
    server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=a), timeout=10)
    server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=b), timeout=10)
    s = scrape(server)
    assert value(s, "brt_sessions_resident") == n0
    m = info.model
    assert value(s, "brt_model_info", name=m.name, fingerprint=m.fingerprint, device=m.device,
                 dtype=m.dtype) == 1
    build = [dict(k[1]) for k in s if k[0] == "brt_build_info"]
    assert len(build) == 1 and build[0]["version"] == info.version


def test_promtool_check_metrics_on_a_live_scrape(server, texts):
    # Traffic first, so every family that fills on use (codes, histograms) is in the scrape.
    sid = new_session(server)
    score(server.stub, sid, [excerpt(texts, "kjv/Acts", 1500)], omit_tokens=True)
    list(server.stub.Generate(pb.GenerateRequest(session_id=sid, max_tokens=3), timeout=60))
    code_of(lambda: server.stub.GetSession(pb.GetSessionRequest(session_id="nope"), timeout=10))
    text = scrape_text(server)
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", \
        (r.returncode, r.stdout, r.stderr)


def test_metrics_off_records_nothing_and_serves():
    s = BrtServer("--metrics_address=")
    try:
        assert s.metrics_address is None
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{s.metrics_port}/metrics", timeout=5)
        sid = new_session(s)
        _, summary = score(s.stub, sid, [b"In the beginning God created the heaven and the earth.\n"])
        assert summary.tokens > 0
        assert "metrics on" not in s.read_log()
    finally:
        assert s.stop() == 0


# ---- a real Prometheus server ----------------------------------------------------------------------------



@pytest.fixture
def prometheus(server, tmp_path):
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus not installed (deploy/install-deps.sh installs it)")
    shutil.copy(Path(ROOT) / "deploy" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        "  - job_name: brt-server\n"
        f"    static_configs: [{{targets: ['{server.metrics_address}']}}]\n")
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    p = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200,
                  60, "prometheus ready")
        yield port
    finally:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def test_prometheus_scrapes_the_server(server, prometheus, texts):
    up = wait_for(lambda: query(prometheus, 'up{job="brt-server"} == 1'), 30, "target up")
    assert len(up) == 1
    # Score continuously until Prometheus has seen the counter rise across scrapes.
    stop = threading.Event()
    errors = []
    book = texts["kjv/Acts"].encode()

    def scorer():
        try:
            while not stop.is_set():
                sid = new_session(server)
                score(server.stub, sid, [book[i:i + 4096] for i in range(0, 20000, 4096)], omit_tokens=True)
                server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=10)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    th = threading.Thread(target=scorer)
    th.start()
    try:
        rate = wait_for(lambda: query(prometheus, "rate(brt_scored_tokens_total[10s]) > 0"), 60,
                         "a positive rate of scored tokens")
    finally:
        stop.set()
        th.join(timeout=300)
    assert not errors, errors
    assert float(rate[0]["value"][1]) > 0
    info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    model = query(prometheus, f'brt_model_info{{fingerprint="{info.model.fingerprint}"}} == 1')
    assert len(model) == 1 and model[0]["metric"]["name"] == info.model.name
    assert query(prometheus, 'brt_executor_batch_rows_count{kind="score_block"} > 0')
    # The rate can turn positive while the first Score call is still running (tokens are counted per
    # executor step, a request when it finishes), so wait for a scrape that saw a finished call.
    wait_for(lambda: query(prometheus, 'brt_requests_total{method="Score", code="OK"} > 0'), 15,
              "a finished Score request in brt_requests_total")
    assert query(prometheus, "histogram_quantile(0.5, rate(brt_executor_step_duration_seconds_bucket[30s]))")
    assert query(prometheus, "process_resident_memory_bytes > 0")
    # The shipped alert rules evaluate against the real server without errors.
    with urllib.request.urlopen(f"http://127.0.0.1:{prometheus}/api/v1/rules", timeout=5) as r:
        body = json.load(r)
    rules = {rule["name"]: rule for g in body["data"]["groups"] for rule in g["rules"]}
    assert rules
    bad = {n: r.get("lastError") for n, r in rules.items() if r["health"] == "err"}
    assert not bad, bad


# ---- persistence: snapshot save/restore, failures, evictions ---------------------------------------------

TINY = os.path.join(ROOT, "tests", "data", "tiny")


def _used_session(s):
    sid = new_session(s)
    score(s.stub, sid, [b"In the beginning God created the heaven and the earth.\n"], omit_tokens=True)
    return sid


def test_snapshot_save_restore_and_failures_are_recorded():
    s = BrtServer(model_dir=TINY)
    try:
        sid = _used_session(s)
        before = scrape(s)
        saved = s.stub.SaveSession(pb.SaveSessionRequest(session_id=sid, return_bytes=True, to_store=False),
                                   timeout=60)
        mid = scrape(s)
        size = saved.size_bytes
        assert size == len(saved.snapshot) > 0
        assert (value(mid, "brt_snapshot_duration_seconds_count", op="save")
                - value(before, "brt_snapshot_duration_seconds_count", op="save")) == 1
        assert (value(mid, "brt_snapshot_bytes_total", op="save")
                - value(before, "brt_snapshot_bytes_total", op="save")) == size
        s.stub.RestoreSession(pb.RestoreSessionRequest(snapshot=saved.snapshot, new_id=True), timeout=60)
        after = scrape(s)
        assert (value(after, "brt_snapshot_duration_seconds_count", op="restore")
                - value(mid, "brt_snapshot_duration_seconds_count", op="restore")) == 1
        assert (value(after, "brt_snapshot_bytes_total", op="restore")
                - value(mid, "brt_snapshot_bytes_total", op="restore")) == size
        assert (value(after, "brt_snapshot_duration_seconds_count", op="save")
                - value(mid, "brt_snapshot_duration_seconds_count", op="save")) == 0
        # Corrupt bytes: a restore failure with reason DATA_LOSS, and no successful restore.
        got = code_of(lambda: s.stub.RestoreSession(pb.RestoreSessionRequest(snapshot=saved.snapshot[:-7]),
                                                    timeout=60))
        assert got == grpc.StatusCode.DATA_LOSS
        bad = scrape(s)
        assert (value(bad, "brt_snapshot_failures_total", op="restore", reason="DATA_LOSS")
                - value(after, "brt_snapshot_failures_total", op="restore", reason="DATA_LOSS")) == 1
        assert (value(bad, "brt_snapshot_duration_seconds_count", op="restore")
                - value(after, "brt_snapshot_duration_seconds_count", op="restore")) == 0
    finally:
        assert s.stop() == 0


def test_memory_budget_evictions_are_recorded_by_reason():
    probe = BrtServer(model_dir=TINY)
    try:
        state_bytes = probe.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).model.state_bytes_per_session
    finally:
        probe.stop()
    s = BrtServer(f"--session_memory_budget_bytes={state_bytes}", model_dir=TINY)
    try:
        before = scrape(s)
        for _ in range(3):
            _used_session(s)
        name = "brt_sessions_evicted_total"
        wait_for(lambda: value(scrape(s), name, reason="capacity") - value(before, name, reason="capacity") >= 2,
                  30, "two budget evictions")
        after = scrape(s)
        evicted = value(after, name, reason="capacity") - value(before, name, reason="capacity")
        assert evicted >= 2
        assert value(after, name, reason="idle_timeout") == value(before, name, reason="idle_timeout")
        # Each eviction snapshotted its session to the store first.
        assert (value(after, "brt_snapshot_duration_seconds_count", op="save")
                - value(before, "brt_snapshot_duration_seconds_count", op="save")) >= evicted
    finally:
        assert s.stop() == 0
