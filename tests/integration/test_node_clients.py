"""Clients nobody here wrote, against the real server: the official openai npm SDK (tests/node/openai_sdk.test.mjs)
and the web page in headless Chromium (tests/node/web_page.test.mjs). Expected numbers come from gRPC.
Needs `npm ci --prefix tests/node` (deploy/test.sh runs it)."""
import json
import os
import subprocess
import tempfile

import pytest

from conftest import ROOT, STUBS, BrtServer, free_port, score

pb = STUBS.pb
NODE_DIR = os.path.join(ROOT, "tests", "node")


@pytest.fixture(scope="module")
def hs():
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "openai")):
        pytest.fail("tests/node/node_modules is missing: run `npm ci --prefix tests/node` (deploy/test.sh does)")
    port = free_port()
    s = BrtServer(f"--http_listen=127.0.0.1:{port}")
    s.http_port = port
    yield s
    s.stop()


def run_node(script, env):
    r = subprocess.run(["node", "--test", "--test-reporter=spec", os.path.join(NODE_DIR, script)],
                       cwd=NODE_DIR, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    return r.stdout


def grpc_expectations(hs, text):
    sid = hs.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
    toks, summary = score(hs.stub, sid, [text.encode()])
    prompt = "And it came to pass"
    sid = hs.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
    msgs = list(hs.stub.Generate(pb.GenerateRequest(session_id=sid, prompt=prompt.encode(), max_tokens=24,
                                                    sampling=pb.SamplingParams(temperature=0)), timeout=120))
    return {"text": text, "token_logprobs": [-t.nll for t in toks], "tokens": summary.tokens,
            "bits_per_token": summary.bits_per_token, "greedy_prompt": prompt,
            "greedy_text": "".join(m.text for m in msgs)}


TEXT = ("1:1 In the beginning God created the heaven and the earth.\n"
        "1:2 And the earth was without form, and void; and darkness was upon the face of the deep.\n"
        "1:3 And God said, Let there be light: and there was light.\n") * 3


def test_openai_sdk(hs):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(grpc_expectations(hs, TEXT), f)
    out = run_node("openai_sdk.test.mjs", {"BRT_BASE_URL": f"http://127.0.0.1:{hs.http_port}/v1",
                                           "BRT_EXPECT": f.name})
    assert "pass 4" in out and "fail 0" in out, out


def test_web_page_in_chromium(hs):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(grpc_expectations(hs, TEXT), f)
    shot = os.environ.get("BRT_SCREENSHOT") or os.path.join(tempfile.mkdtemp(prefix="brt-page-"), "page.png")
    out = run_node("web_page.test.mjs", {"BRT_PAGE_URL": f"http://127.0.0.1:{hs.http_port}/",
                                         "BRT_EXPECT": f.name, "BRT_SCREENSHOT": shot})
    assert "pass 1" in out and "fail 0" in out, out
    assert os.path.getsize(shot) > 10_000
    print(f"screenshot: {shot}")
