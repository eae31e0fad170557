"""Helpers shared by the tests that start a real Prometheus server: its query API and polling."""
import json
import time
import urllib.parse
import urllib.request

import pytest


def query(prom_port, expr):
    """Runs an instant query on the Prometheus at 127.0.0.1:prom_port; returns the result vector."""
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(fn, timeout_s, what):
    """Polls fn until it returns something truthy (connection errors count as not yet); fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except OSError as e:  # not listening yet
            last = e
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")
