"""A real Prometheus server (Debian's /usr/bin/prometheus), started on loopback, scrapes the metrics exposer
and answers queries about it, with deploy/prometheus/alerts.yml loaded.

The scraped process is `brt-metrics-dump --serve`, which serves a fresh Metrics facade and adds 64 scored
tokens every 100 ms; the same checks against brt-server itself (live scrape, promtool, Prometheus queries,
counters against the work done) are in tests/integration/test_metrics.py. Needs build/bin/brt-metrics-dump
(or BRT_METRICS_DUMP) and prometheus.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from prom_query import query, wait_for  # noqa: E402
DUMP = os.environ.get("BRT_METRICS_DUMP") or str(ROOT / "build" / "bin" / "brt-metrics-dump")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




@pytest.fixture
def exporter():
    if not Path(DUMP).exists():
        pytest.fail(f"{DUMP} not built (deploy/build.sh builds it)")
    p = subprocess.Popen([DUMP, "--serve", "127.0.0.1:0"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().split()
        assert line and line[0] == "port", line
        yield int(line[1])
    finally:
        p.stdin.close()  # EOF ends the tool
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def prometheus(exporter, tmp_path):
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus not installed (deploy/install-deps.sh installs it)")
    shutil.copy(ROOT / "deploy" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        "  - job_name: brt-server\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]\n")
    port = _free_port()
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


def test_prometheus_scrapes_the_exposer(prometheus):
    up = wait_for(lambda: query(prometheus, 'up{job="brt-server"} == 1'), 30, "target up")
    assert len(up) == 1
    rate = wait_for(lambda: query(prometheus, "rate(brt_scored_tokens_total[5s]) > 0"), 30,
                     "a positive rate of scored tokens")
    # 64 tokens every 100 ms, less the sleep jitter of a loaded machine.
    assert 100 < float(rate[0]["value"][1]) < 1000, rate
    # Histograms arrive with their buckets; process metrics are there too.
    assert query(prometheus, 'brt_executor_batch_rows_bucket{kind="score_block", le="4"}')
    assert query(prometheus, "process_resident_memory_bytes > 0")
    assert query(prometheus, 'brt_requests_total{method="Score", code="OK"}')


def test_prometheus_loads_the_alert_rules(prometheus):
    with urllib.request.urlopen(f"http://127.0.0.1:{prometheus}/api/v1/rules", timeout=5) as r:
        body = json.load(r)
    groups = {g["name"]: g for g in body["data"]["groups"]}
    assert set(groups) >= {"brt-server-availability", "brt-server-scheduler", "brt-server-latency",
                           "brt-server-errors", "brt-server-persistence"}
    wait_for(lambda: query(prometheus, "brt_scored_tokens_total"), 30, "first samples")
    time.sleep(2)  # a couple of evaluations
    with urllib.request.urlopen(f"http://127.0.0.1:{prometheus}/api/v1/rules", timeout=5) as r:
        body = json.load(r)
    health = {rule["name"]: rule for g in body["data"]["groups"] for rule in g["rules"]}
    bad = {n: r.get("lastError") for n, r in health.items() if r["health"] == "err"}
    assert not bad, bad
    # Nothing is wrong with the exporter, so no alert should be firing.
    firing = [n for n, r in health.items() if r.get("state") == "firing"]
    assert not firing, firing
