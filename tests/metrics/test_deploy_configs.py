"""Checks of the Prometheus and Grafana configuration in deploy/ against the metrics the server defines.

The metric catalogue is tests/metrics/metric_names.txt ("<name> <type>" per line), the output of
build/bin/brt-metrics-dump; when that binary exists (or BRT_METRICS_DUMP names one) the golden file is
checked against it first. Run: /usr/bin/python3 -m pytest tests/metrics
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "brt-dashboard.json"
GOLDEN = ROOT / "tests" / "metrics" / "metric_names.txt"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# Series Prometheus itself creates for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# PromQL words that look like identifiers but are not metric names.
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "le",
}


def _families():
    families = {}
    for line in GOLDEN.read_text().splitlines():
        name, kind = line.split()
        families[name] = kind
    return families


def _exported_series_names():
    """Names a query may use: counters and gauges as is, histograms with their _bucket/_sum/_count."""
    names = set(SYNTHETIC)
    for name, kind in _families().items():
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
        else:
            names.add(name)
    return names


def metric_names_in(expr):
    """The metric names a PromQL expression selects (a small lexer, enough for our queries)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables
    e = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", e)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("("):  # a function or aggregation
            continue
        if word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def _alert_exprs():
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _dashboard():
    return json.loads(DASHBOARD.read_text())


def _dashboard_exprs():
    d = _dashboard()
    out = []
    for panel in d["panels"]:
        for t in panel.get("targets", []):
            out.append((panel["title"], t["expr"]))
    for var in d.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        if var.get("type") == "query" and q:
            m = re.match(r"label_values\((.*),\s*\w+\)\s*$", q)
            out.append(("variable " + var["name"], m.group(1) if m else q))
    return out


def _promtool(*args):
    return subprocess.run([PROMTOOL, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=60)


# ---- the catalogue ----------------------------------------------------------------------------------


def test_golden_list_matches_the_dump_tool():
    tool = os.environ.get("BRT_METRICS_DUMP") or str(ROOT / "build" / "bin" / "brt-metrics-dump")
    if not Path(tool).exists():
        pytest.skip(f"{tool} not built; checking deploy configs against the committed golden list")
    out = subprocess.run([tool], capture_output=True, text=True, timeout=30, check=True).stdout
    assert out == GOLDEN.read_text(), "regenerate tests/metrics/metric_names.txt with brt-metrics-dump"


def test_catalogue_follows_naming_conventions():
    for name, kind in _families().items():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        assert name.startswith(("brt_", "process_")), name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        assert not re.search(r"_(milliseconds|microseconds|ms|us|kilobytes|megabytes)$", name), name


def test_lexer_finds_metric_names():
    assert metric_names_in(
        'histogram_quantile(0.95, sum by (le, kind) (rate(brt_x_bucket{job="a", kind=~"b|c"}[5m])))'
    ) == {"brt_x_bucket"}
    assert metric_names_in(
        "sum by (code) (rate(a_total[$__rate_interval])) / ignoring (code) group_left sum(rate(b_total[5m]))"
    ) == {"a_total", "b_total"}
    assert metric_names_in("min_over_time(q[5m]) > 0 and on (instance) (x + y) == 0") == {"q", "x", "y"}


# ---- Prometheus -------------------------------------------------------------------------------------


def test_promtool_check_config():
    r = _promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_check_rules():
    r = _promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_rule_unit_tests():
    r = _promtool("test", "rules", "alerts_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rules_cover_the_required_conditions():
    names = {a for a, _ in _alert_exprs()}
    for required in ["BrtServerDown", "BrtQueueSaturated", "BrtInterTokenLatencyP95High",
                     "BrtInterTokenLatencyP99High", "BrtTimeToFirstTokenP95High",
                     "BrtTimeToFirstTokenP99High", "BrtErrorRatioHigh", "BrtServerErrors",
                     "BrtSnapshotFailures"]:
        assert required in names


def test_every_metric_in_alert_rules_is_exported():
    exported = _exported_series_names()
    for alert, expr in _alert_exprs():
        used = metric_names_in(expr)
        assert used, f"{alert}: no metric found in {expr!r}"
        missing = used - exported
        assert not missing, f"alert {alert} uses metrics the server does not export: {missing}"


# ---- Grafana ----------------------------------------------------------------------------------------


def test_dashboard_parses_and_is_well_formed():
    d = _dashboard()
    assert d["title"] and d["uid"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]


def test_dashboard_has_the_required_panels():
    exprs = " ".join(e for _, e in _dashboard_exprs())
    for needle in ["rate(brt_scored_tokens_total", "rate(brt_generated_tokens_total",
                   "histogram_quantile(0.99, sum by (le) (rate(brt_inter_token_latency_seconds_bucket",
                   "histogram_quantile(0.95, sum by (le) (rate(brt_time_to_first_token_seconds_bucket",
                   "brt_queue_depth", "brt_queue_wait_seconds_bucket", "brt_executor_batch_rows",
                   "brt_sessions_resident", "brt_session_state_bytes", "process_resident_memory_bytes"]:
        assert needle in exprs, needle


def test_every_metric_in_dashboard_queries_is_exported():
    exported = _exported_series_names()
    for title, expr in _dashboard_exprs():
        used = metric_names_in(expr)
        assert used, f"panel {title!r}: no metric found in {expr!r}"
        missing = used - exported
        assert not missing, f"panel {title!r} uses metrics the server does not export: {missing}"


def test_every_brt_family_is_on_the_dashboard():
    used = set()
    for _, expr in _dashboard_exprs():
        used |= metric_names_in(expr)
    for name, kind in _families().items():
        if not name.startswith("brt_"):
            continue
        candidates = {name} if kind != "histogram" else {name + s for s in ("_bucket", "_sum", "_count")}
        assert candidates & used, f"{name} is exported but not on the dashboard"
