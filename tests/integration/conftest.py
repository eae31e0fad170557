"""Fixtures for end-to-end tests: the real brt-server binary on loopback, real gRPC, the real model.

Environment:
  BRT_BUILD_DIR  build directory holding bin/brt-server (default: <repo>/build)
  BRT_MODEL_DIR  model directory served in the tests (default: <repo>/model/artifacts, the shipped model)
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BRT_BUILD_DIR", os.path.join(ROOT, "build"))
MODEL_DIR = os.environ.get("BRT_MODEL_DIR", os.path.join(ROOT, "model", "artifacts"))
SERVER_BIN = os.path.join(BUILD, "bin", "brt-server")
sys.path.insert(0, os.path.join(ROOT, "model"))


def _generate_stubs():
    out = tempfile.mkdtemp(prefix="brt-stubs-")
    plugin = "/usr/bin/grpc_python_plugin"
    jobs = [(os.path.join(ROOT, "proto", "brt", "v1"), "brt.proto"),
            (os.path.join(ROOT, "tests", "integration", "protos"), "health.proto"),
            (os.path.join(ROOT, "tests", "integration", "protos"), "reflection.proto")]
    for inc, name in jobs:
        subprocess.run(["protoc", f"-I{inc}", f"--python_out={out}", f"--grpc_out={out}",
                        f"--plugin=protoc-gen-grpc={plugin}", os.path.join(inc, name)], check=True)
    sys.path.insert(0, out)
    import brt_pb2, brt_pb2_grpc, health_pb2, health_pb2_grpc, reflection_pb2, reflection_pb2_grpc  # noqa
    return types.SimpleNamespace(pb=brt_pb2, rpc=brt_pb2_grpc, health=health_pb2, health_rpc=health_pb2_grpc,
                                 refl=reflection_pb2, refl_rpc=reflection_pb2_grpc)


STUBS = _generate_stubs()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrtServer:
    """One brt-server process on a free loopback port."""

    def __init__(self, *extra_args, model_dir=MODEL_DIR, threads=2, credentials=None, port=None, env=None,
                 binary=None):
        """credentials: grpc.ChannelCredentials for a server started with TLS flags (None: plaintext).
        port: listen there (a replica restarted behind a proxy); default a free one.
        env: variables added to the server's environment.
        binary: another brt-server build (benchmarks comparing two); default build/bin/brt-server."""
        import grpc
        binary = binary or SERVER_BIN
        if not os.path.exists(binary):
            raise RuntimeError(f"{binary} not built: run deploy/build.sh")
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Every test server gets its own free metrics port (never the default 9464: servers run side by side);
        # an explicit --metrics_address in extra_args wins (the last flag counts; empty = metrics off).
        self.metrics_port = free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self.metrics_address = f"127.0.0.1:{self.metrics_port}"
        for a in extra_args:
            if a.startswith("--metrics_address="):
                self.metrics_address = a.split("=", 1)[1] or None
        # A private snapshot store per server unless the test names one (the binary's default, ./brt-snapshots,
        # would collect the sessions every test server saves when it is stopped).
        if not any(a.startswith("--snapshot_store=") for a in extra_args):
            extra_args = (*extra_args, f"--snapshot_store=file://{tempfile.mkdtemp(prefix='brt-snapshots-')}")
        self.log_path = tempfile.mktemp(prefix="brt-server-", suffix=".log")
        self.args = [binary, f"--model_dir={model_dir}", f"--listen={self.address}", f"--threads={threads}",
                     f"--metrics_address=127.0.0.1:{self.metrics_port}", *extra_args]

        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, **(env or {})})
        # The channel is made once the port accepts connections: a gRPC channel whose first connection is
        # refused backs off (1 s, 1.6 s, 2.6 s, ...) and would see the server seconds after it is up.
        self.wait_listening()
        self.credentials = credentials
        self.channel = (grpc.secure_channel(self.address, credentials) if credentials is not None
                        else grpc.insecure_channel(self.address))
        self.stub = STUBS.rpc.BrtStub(self.channel)
        self.health = STUBS.health_rpc.HealthStub(self.channel)
        self.wait_serving()

    def wait_listening(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"brt-server exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"brt-server not listening after {timeout}s:\n{self.read_log()}")

    def wait_serving(self, timeout=120):
        import grpc
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"brt-server exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                r = self.health.Check(STUBS.health.HealthCheckRequest(service=""), timeout=1)
                if r.status == STUBS.health.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"brt-server not serving after {timeout}s:\n{self.read_log()}")

    def read_log(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-5000:]

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def stubs():
    return STUBS


def stop_alive(s):
    """Stops a module's server, failing with its log if it had died while the module's tests ran."""
    died = s.proc.poll()  # None while it runs: it should still run when the module's tests are done
    log = s.read_log() if died is not None else ""
    s.stop()
    if died is not None:
        pytest.fail(f"brt-server died during this module's tests (exit code {died}); its log ends:\n{log}")


@pytest.fixture(scope="module")
def server():
    s = BrtServer()
    yield s
    stop_alive(s)


@pytest.fixture(scope="session")
def reference():
    """The eager Python reference model and tokenizer for MODEL_DIR."""
    import torch
    from brt.reference import load_eager
    from brt.tokenizer import Tokenizer
    torch.set_num_threads(2)
    model, meta = load_eager(os.path.join(MODEL_DIR, "brt.pt"))
    tok = Tokenizer(os.path.join(MODEL_DIR, "tokenizer.model"))
    return types.SimpleNamespace(model=model, meta=meta, tok=tok)


def corpus_docs(split="test"):
    path = os.path.join(ROOT, "model", "data", f"{split}.jsonl")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(ROOT, "model", "build_corpus.py"), "--out",
                        os.path.join(ROOT, "model", "data")], check=True)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def texts():
    """Held-out texts: Bible books and Python files of the test split, by name."""
    return {d["name"]: d["text"] for d in corpus_docs("test")}


def score(stub, session_id, chunks, top_k=0, omit_tokens=False, timeout=600):
    """Runs one Score call; returns (token scores, summary)."""
    pb = STUBS.pb

    def requests():
        first = True
        for c in chunks:
            if first:
                yield pb.ScoreRequest(session_id=session_id, top_k=top_k, omit_tokens=omit_tokens, text=c)
                first = False
            else:
                yield pb.ScoreRequest(text=c)
        if first:
            yield pb.ScoreRequest(session_id=session_id, top_k=top_k, omit_tokens=omit_tokens)

    toks, summary = [], None
    for resp in stub.Score(requests(), timeout=timeout):
        toks.extend(resp.tokens)
        if resp.HasField("summary"):
            summary = resp.summary
    return toks, summary


def split_random(data: bytes, rng, lo=1, hi=64):
    out, i = [], 0
    while i < len(data):
        n = rng.randint(lo, hi)
        out.append(data[i:i + n])
        i += n
    return out
