"""End-to-end tests of the clients against the real brt-server: the `brt` command-line tool
(build/bin/brt, or $BRT_CLIENT_BIN) and the Python client (client/python, imported from the tree).

Each CLI result is checked against the server's own RPCs (through conftest's generated stubs), and the
Python client against the CLI.
"""
import filecmp
import json
import math
import os
import subprocess
import sys
import tempfile

import grpc
import pytest

from conftest import BUILD, ROOT, STUBS, corpus_docs, free_port, score

sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import brt_client  # noqa: E402
from brt_client import BrtError, Client  # noqa: E402

pb = STUBS.pb
BRT_BIN = os.environ.get("BRT_CLIENT_BIN", os.path.join(BUILD, "bin", "brt"))
UNKNOWN_SESSION = "s_" + "0" * 32
LN2 = math.log(2)


@pytest.fixture(scope="module")
def brt(server):
    """Runs `brt ARGS...` against the test server; returns the CompletedProcess."""
    if not os.path.exists(BRT_BIN):
        raise RuntimeError(f"{BRT_BIN} not built: run deploy/build.sh")

    def run(*args, server_addr=None, stdin=None, check=True, timeout=600):
        cmd = [BRT_BIN, *args]
        if server_addr is not False:
            cmd.append(f"--server={server_addr or server.address}")
        p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd} exited {p.returncode}:\n{p.stderr.decode(errors='replace')}")
        return p

    return run


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """About 12 KB of a held-out Bible book, cut at a line end."""
    docs = {d["name"]: d["text"] for d in corpus_docs("test")}
    name = next(n for n in sorted(docs) if n.startswith("kjv/") and len(docs[n].encode()) > 20000)
    data = docs[name].encode()[:12000]
    data = data[:data.rfind(b"\n") + 1]
    path = tmp_path_factory.mktemp("book") / "book.txt"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def window(server):
    return server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).model.window


@pytest.fixture(scope="module")
def py_client(server):
    with Client(server.address) as c:
        yield c


def rpc_score(server, data, chunk=65536):
    sid = server.stub.CreateSession(pb.CreateSessionRequest(label="rpc"), timeout=10).id
    try:
        return score(server.stub, sid, [data[i:i + chunk] for i in range(0, len(data), chunk)])
    finally:
        server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=10)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def close(a, b, rel=1e-6, abs_=1e-6):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def assert_summary_matches(got, want):
    assert got["tokens"] == want.tokens
    assert got["bytes"] == want.bytes
    for field in ("total_nll", "mean_nll", "perplexity", "bits_per_token", "bits_per_byte"):
        assert close(got[field], getattr(want, field)), field


# -- stubs -------------------------------------------------------------------------------------------

def test_shipped_python_stubs_are_up_to_date_with_the_proto(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "client", "python"))
    import gen_stubs
    gen_stubs.generate(str(tmp_path))
    for name in gen_stubs.FILES:
        shipped = os.path.join(gen_stubs.OUT_DIR, name)
        assert filecmp.cmp(shipped, tmp_path / name, shallow=False), (
            f"{shipped} is stale: run /usr/bin/python3 client/python/gen_stubs.py")


# -- brt score ---------------------------------------------------------------------------------------

def test_score_json_matches_the_score_rpc(brt, server, book, tmp_path):
    data = book.read_bytes()
    want_toks, want = rpc_score(server, data)
    tokens_path = tmp_path / "tokens.jsonl"
    out = json.loads(brt("score", "--json", f"--tokens={tokens_path}", "--chunk_bytes=1000",
                         str(book)).stdout)
    assert len(out["files"]) == 1 and out["files"][0]["file"] == str(book)
    assert_summary_matches(out["files"][0]["summary"], want)
    assert_summary_matches(out["total"], want)
    rows = read_jsonl(tokens_path)
    assert [r["token_id"] for r in rows] == [t.token_id for t in want_toks]
    assert [r["position"] for r in rows] == [t.position for t in want_toks]
    assert [(r["byte_begin"], r["byte_end"]) for r in rows] == [(t.byte_begin, t.byte_end) for t in want_toks]
    assert max(abs(r["nll"] - t.nll) for r, t in zip(rows, want_toks)) < 1e-5
    assert "".join(r["piece"] for r in rows).encode() == data


def test_score_tsv_tokens_and_text_summary(brt, server, book, tmp_path):
    _, want = rpc_score(server, book.read_bytes())
    tsv = tmp_path / "tokens.tsv"
    p = brt("score", f"--tokens={tsv}", str(book))
    text = p.stdout.decode()
    assert f"{want.tokens} tokens" in text and "bits/token" in text and "perplexity" in text
    assert p.stderr == b""  # no progress bar when stderr is not a terminal
    lines = tsv.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "position\ttoken_id\tpiece\tbyte_begin\tbyte_end\tnll"
    assert len(lines) == want.tokens + 1
    assert all(len(line.split("\t")) == 6 for line in lines)


def test_score_several_files_totals_them(brt, server, book, tmp_path):
    other = tmp_path / "other.txt"
    other.write_bytes(b"And God said, Let there be light: and there was light.\n")
    out = json.loads(brt("score", "--json", str(book), str(other)).stdout)
    a, b = (f["summary"] for f in out["files"])
    assert out["total"]["tokens"] == a["tokens"] + b["tokens"]
    assert close(out["total"]["total_nll"], a["total_nll"] + b["total_nll"])
    assert close(out["total"]["bits_per_token"], out["total"]["total_nll"] / out["total"]["tokens"] / LN2)


def test_score_into_an_existing_session_continues_it(brt, server, book):
    sid = brt("sessions", "create", "--label=cont").stdout.decode().strip()
    first = json.loads(brt("score", "--json", f"--session={sid}", str(book)).stdout)["files"][0]["summary"]
    second = json.loads(brt("score", "--json", f"--session={sid}", str(book)).stdout)["files"][0]["summary"]
    assert second["position"] == first["position"] + second["tokens"]
    s = server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
    assert s.position == second["position"]
    brt("sessions", "delete", sid)


# -- brt compare -------------------------------------------------------------------------------------

def test_compare_json_reports_both_figures_over_the_same_tokens(brt, server, book, window, tmp_path):
    data = book.read_bytes()
    n_blocks = 2
    out = json.loads(brt("compare", "--json", f"--reset_every={n_blocks}", "--top=5", str(book)).stdout)
    per = out["per_token"]
    carried, reset = per["nll_carried"], per["nll_reset"]
    n = out["tokens"]
    assert len(carried) == len(reset) == n and out["window"] == window
    assert out["carried_bits_per_token"] == pytest.approx(sum(carried) / n / LN2, rel=1e-9)
    assert out["reset_bits_per_token"] == pytest.approx(sum(reset) / n / LN2, rel=1e-9)
    assert out["carried"]["tokens"] == out["reset"]["tokens"] == n

    # The carried run is the plain whole-book score.
    want_toks, want = rpc_score(server, data)
    assert n == want.tokens and per["token_id"] == [t.token_id for t in want_toks]
    assert out["carried_bits_per_token"] == pytest.approx(want.bits_per_token, rel=1e-6)

    # Segments: each starts right after a newline at or past N*W tokens; the reset run of a segment is
    # exactly a fresh session scoring that segment's text.
    seg_len = n_blocks * window
    assert out["segments"] >= 2 and out["segment_min_tokens"] == seg_len
    # The first segment is identical in both runs (same session start, same tokens).
    first_end = n - out["after_first_segment"]["tokens"]
    assert first_end >= seg_len
    assert max(abs(a - b) for a, b in zip(carried[:first_end], reset[:first_end])) < 1e-5
    assert data[per["byte_end"][first_end - 1] - 1] == 10
    # Second segment: score it on its own in a new session.
    second_end = first_end + seg_len - 1
    while data[per["byte_end"][second_end] - 1] != 10:
        second_end += 1
    seg = data[per["byte_begin"][first_end]:per["byte_end"][second_end]]
    seg_toks, _ = rpc_score(server, seg)
    assert len(seg_toks) == second_end + 1 - first_end
    assert max(abs(t.nll - r) for t, r in zip(seg_toks, reset[first_end:second_end + 1])) < 1e-5

    # Top gains: sorted, consistent with the per-token columns, with excerpts and distances.
    top = out["top"]
    assert len(top) == 5
    gains = [t["gain_nats"] for t in top]
    assert gains == sorted(gains, reverse=True)
    for t in top:
        i = t["index"]
        assert t["gain_nats"] == pytest.approx(reset[i] - carried[i], abs=1e-9)
        assert t["excerpt"]["token"].encode() == data[per["byte_begin"][i]:per["byte_end"][i]]
        prev = [j for j in range(i) if per["token_id"][j] == per["token_id"][i]]
        assert t["distance_back"] == (i - prev[-1] if prev else None)
        # by default the top list leaves out the first W tokens after each reset
        assert i < first_end or t["since_reset"] >= window
    assert out["top_skips_tokens_after_reset"] == window


def test_compare_text_report(brt, book):
    text = brt("compare", "--reset_every=2", "--top=3", str(book)).stdout.decode()
    assert "state carried" in text and "state reset every 2 blocks" in text
    assert "attention window" in text  # says what "reset" means
    assert "prev-occ" in text


# -- brt plot ----------------------------------------------------------------------------------------

def check_png(path, width=1200, height=700):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert data[12:16] == b"IHDR"
    assert int.from_bytes(data[16:20], "big") == width and int.from_bytes(data[20:24], "big") == height
    assert len(data) > 10_000, f"{path}: only {len(data)} bytes"
    assert data[-8:-4] == b"IEND"


def test_plot_writes_pngs_from_compare_json_and_token_tables(brt, book, tmp_path):
    cmp_json = tmp_path / "compare.json"
    cmp_json.write_bytes(brt("compare", "--json", "--reset_every=2", str(book)).stdout)
    out = brt("plot", str(cmp_json), f"--out={tmp_path / 'cmp'}", server_addr=False).stdout.decode()
    check_png(tmp_path / "cmp-cumulative.png")
    check_png(tmp_path / "cmp-difference.png", 1200, 1050)  # two panels: 1.5 times as tall
    assert "cmp-cumulative.png" in out and "cmp-difference.png" in out

    tsv = tmp_path / "t.tsv"
    brt("score", f"--tokens={tsv}", str(book))
    brt("plot", str(tsv), "--logx", "--width=800", "--height=500", f"--out={tmp_path / 'score'}",
        server_addr=False)
    check_png(tmp_path / "score-cumulative.png", 800, 500)
    assert not (tmp_path / "score-difference.png").exists()  # no reset column: no difference plot


# -- error paths -------------------------------------------------------------------------------------

def dead_address():
    return f"127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize("args", [
    ["health"],
    ["generate", "hello", "--max_tokens=2"],
    ["score", "FILE"],
    ["compare", "FILE"],
    ["sessions", "list"],
    ["sessions", "info", UNKNOWN_SESSION],
    ["sessions", "create"],
    ["sessions", "delete", UNKNOWN_SESSION],
], ids=lambda a: "-".join(a[:2]) if a[0] == "sessions" else a[0])
def test_unreachable_server_exits_nonzero_with_the_grpc_code(brt, book, args):
    args = [str(book) if a == "FILE" else a for a in args]
    p = brt(*args, server_addr=dead_address(), check=False, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert err.startswith("brt: UNAVAILABLE: ") and "127.0.0.1" in err, err


@pytest.mark.parametrize("args", [
    ["generate", "hello", f"--session={UNKNOWN_SESSION}"],
    ["score", f"--session={UNKNOWN_SESSION}", "FILE"],
    ["sessions", "info", UNKNOWN_SESSION],
    ["sessions", "delete", UNKNOWN_SESSION],
], ids=["generate", "score", "sessions-info", "sessions-delete"])
def test_unknown_session_exits_nonzero_with_not_found(brt, book, args):
    args = [str(book) if a == "FILE" else a for a in args]
    p = brt(*args, check=False)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert err.startswith("brt: NOT_FOUND: ") and UNKNOWN_SESSION in err, err


def test_local_errors_exit_nonzero(brt, tmp_path):
    missing = str(tmp_path / "missing.txt")
    for args in (["score", missing], ["compare", missing], ["plot", missing]):
        p = brt(*args, check=False, server_addr=False if args[0] == "plot" else None)
        assert p.returncode == 1 and p.stderr.decode().startswith("brt: NOT_FOUND: "), p.stderr
    summary_only = tmp_path / "summary.json"
    summary_only.write_text('{"files": [], "total": {}}')
    p = brt("plot", str(summary_only), server_addr=False, check=False)
    assert p.returncode == 1 and b"INVALID_ARGUMENT" in p.stderr and b"--tokens" in p.stderr
    p = brt("plot", "--gnuplot=/nonexistent/gnuplot", str(summary_only), server_addr=False, check=False)
    assert p.returncode == 1
    # Usage errors exit 2.
    for args in (["score"], ["score", "--bogus", "x"], ["compare", "--reset_every=0", "x"],
                 ["sessions", "frobnicate"], ["nosuchcommand"], ["save"], ["restore"],
                 ["restore", "k", "--from=f"], ["save", "x", "--store=false"], ["snapshots", "drop"],
                 ["plot"]):
        p = brt(*args, check=False, server_addr=False if args[0] == "plot" else None)
        assert p.returncode == 2, (args, p.stderr)


def test_tls_options_fail_clearly_against_a_plaintext_server(brt, tmp_path):
    p = brt("sessions", "list", f"--tls_root_cert={tmp_path / 'missing.pem'}", check=False)
    assert p.returncode == 1 and p.stderr.decode().startswith("brt: NOT_FOUND: --tls_root_cert"), p.stderr
    p = brt("sessions", "list", "--tls", "--timeout=10", check=False, timeout=60)
    assert p.returncode == 1 and p.stderr.decode().startswith("brt: UNAVAILABLE: "), p.stderr


def test_api_key_is_sent_as_bearer_metadata(brt):
    """A stand-in server records the metadata of each call (brt-server itself ignores the key)."""
    from concurrent import futures
    seen = []

    def list_sessions(request, context):
        seen.append(dict(context.invocation_metadata()))
        return pb.ListSessionsResponse()

    fake = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    fake.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("brt.v1.Brt", {
        "ListSessions": grpc.unary_unary_rpc_method_handler(
            list_sessions, request_deserializer=pb.ListSessionsRequest.FromString,
            response_serializer=pb.ListSessionsResponse.SerializeToString)})])
    port = fake.add_insecure_port("127.0.0.1:0")
    fake.start()
    try:
        addr = f"127.0.0.1:{port}"
        brt("sessions", "list", "--api_key=k-123", server_addr=addr)
        with Client(addr, api_key="k-456") as c:
            assert c.list_sessions() == []
        brt("sessions", "list", server_addr=addr)
    finally:
        fake.stop(None)
    assert seen[0].get("authorization") == "Bearer k-123"
    assert seen[1].get("authorization") == "Bearer k-456"
    assert "authorization" not in seen[2]


def test_ctrl_c_cancels_the_stream_and_deletes_the_session(brt, server, book, tmp_path):
    import signal
    import time
    big = tmp_path / "big.txt"
    big.write_bytes(book.read_bytes() * 40)
    proc = subprocess.Popen([BRT_BIN, "score", str(big), f"--server={server.address}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the Score call runs
        live = [s for s in server.stub.ListSessions(pb.ListSessionsRequest(), timeout=10).sessions
                if s.label == "big.txt"]
        if live and live[0].tokens_consumed > 0:
            break
        time.sleep(0.05)
    assert live, "the score never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.decode().strip() == "brt: interrupted", err
    labels = [s.label for s in server.stub.ListSessions(pb.ListSessionsRequest(), timeout=10).sessions]
    assert "big.txt" not in labels


# -- persistence: save, restore, fork, snapshots -------------------------------------------------------

GEN = ["generate", "--max_tokens=16", "--seed=3", "--temperature=0.8", " And"]


def test_save_fork_restore_continue_the_document_exactly(brt, server, book, tmp_path):
    sid = brt("sessions", "create", "--label=persist").stdout.decode().strip()
    brt("score", f"--session={sid}", str(book))
    fork = brt("fork", sid).stdout.decode().strip()
    assert fork.startswith("s_") and fork != sid
    snap = tmp_path / "session.snap"
    saved = json.loads(brt("save", sid, f"--out={snap}", "--json").stdout)
    assert saved["snapshot_key"] == sid and saved["size_bytes"] == snap.stat().st_size > 0
    assert sid in brt("snapshots", "list").stdout.decode().split()
    assert sid in json.loads(brt("snapshots", "list", "--json").stdout)

    # The original, its fork, and restores of its snapshot all continue the same document.
    want = brt(*GEN, f"--session={sid}").stdout
    assert brt(*GEN, f"--session={fork}").stdout == want
    from_file = brt("restore", f"--from={snap}", "--new_id").stdout.decode().strip()
    assert from_file not in (sid, fork)
    assert brt(*GEN, f"--session={from_file}").stdout == want
    p = brt("restore", sid, check=False)  # the stored key is a loaded session's id
    assert p.returncode == 1 and p.stderr.decode().startswith("brt: ALREADY_EXISTS: "), p.stderr
    from_store = json.loads(brt("restore", sid, "--new_id", "--json").stdout)
    assert from_store["label"] == "persist"
    assert brt(*GEN, f"--session={from_store['id']}").stdout == want

    # --store=false writes only the file; DeleteSession also removes the stored snapshot.
    only_file = tmp_path / "fork.snap"
    out = brt("save", fork, f"--out={only_file}", "--store=false").stdout.decode()
    assert out.startswith("wrote ") and "server's store" not in out and only_file.stat().st_size > 0
    assert fork not in brt("snapshots", "list").stdout.decode().split()
    brt("sessions", "delete", sid, fork, from_file, from_store["id"])
    assert sid not in brt("snapshots", "list").stdout.decode().split()


@pytest.mark.parametrize("args,code", [
    (["save", UNKNOWN_SESSION], "NOT_FOUND"),
    (["fork", UNKNOWN_SESSION], "NOT_FOUND"),
    (["restore", UNKNOWN_SESSION], "NOT_FOUND"),
    (["snapshots", "delete", UNKNOWN_SESSION], "NOT_FOUND"),
    (["restore", "--from=CORRUPT"], "DATA_LOSS"),
], ids=["save", "fork", "restore", "snapshots-delete", "restore-corrupt"])
def test_persistence_errors_exit_nonzero_with_the_grpc_code(brt, tmp_path, args, code):
    corrupt = tmp_path / "corrupt.snap"
    corrupt.write_bytes(b"this is not a snapshot" * 10)
    args = [a.replace("CORRUPT", str(corrupt)) for a in args]
    p = brt(*args, check=False)
    assert p.returncode == 1 and p.stderr.decode().startswith(f"brt: {code}: "), p.stderr


@pytest.mark.parametrize("args", [["save", UNKNOWN_SESSION], ["fork", UNKNOWN_SESSION],
                                  ["restore", UNKNOWN_SESSION], ["snapshots", "list"]],
                         ids=["save", "fork", "restore", "snapshots"])
def test_persistence_commands_against_an_unreachable_server(brt, args):
    p = brt(*args, server_addr=dead_address(), check=False, timeout=60)
    assert p.returncode == 1 and p.stderr.decode().startswith("brt: UNAVAILABLE: "), p.stderr


# -- generate, sessions, health ----------------------------------------------------------------------

def test_generate_streams_with_seed_reproducibly_and_reads_stdin(brt):
    args = ["generate", "--max_tokens=24", "--seed=11", "--temperature=0.9"]
    a = brt(*args, "In the beginning").stdout
    b = brt(*args, stdin=b"In the beginning").stdout
    assert a == b and len(a) > 0
    j = json.loads(brt(*args, "--json", "In the beginning").stdout)
    assert j["text"].encode() == a
    assert j["generated_tokens"] == len(j["tokens"]) <= 24
    assert j["finish_reason"] in ("length", "eos", "stop_sequence")
    assert j["prompt_tokens"] > 0


def test_generate_continues_a_session_and_keeps_it(brt, server):
    sid = brt("sessions", "create").stdout.decode().strip()
    brt("generate", f"--session={sid}", "--max_tokens=5", "--seed=1", "Hello")
    s = server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
    assert s.tokens_consumed >= 5
    brt("sessions", "delete", sid)


def test_sessions_create_list_info_delete(brt, server):
    created = json.loads(brt("sessions", "create", "--label=cli-test", "--json").stdout)
    sid = created["id"]
    listed = json.loads(brt("sessions", "list", "--json").stdout)
    assert sid in [s["id"] for s in listed]
    assert "cli-test" in brt("sessions", "list").stdout.decode()
    info = json.loads(brt("sessions", "info", sid, "--json").stdout)
    assert info[0]["id"] == sid and info[0]["label"] == "cli-test"
    assert sid in brt("sessions", "info", sid).stdout.decode()
    assert brt("sessions", "delete", sid).stdout.decode().strip() == f"deleted {sid}"
    with pytest.raises(grpc.RpcError) as e:
        server.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_api_key(brt, server, window):
    p = brt("health", "--api_key=secret-key")  # brt-server ignores the key for now
    assert b"SERVING" in p.stdout and f"W={window}".encode() in p.stdout
    j = json.loads(brt("health", "--json").stdout)
    assert j["status"] == "SERVING" and j["server_info"]["model"]["window"] == window
    assert b"secret-key" not in brt("score", "--help", server_addr=False).stdout


# -- Python client -----------------------------------------------------------------------------------

def test_python_client_scores_a_file_like_the_cli(brt, py_client, book, tmp_path):
    tokens_path = tmp_path / "tokens.jsonl"
    cli = json.loads(brt("score", "--json", f"--tokens={tokens_path}", str(book)).stdout)["files"][0]["summary"]
    res = py_client.score_file(book)
    assert res.summary.tokens == cli["tokens"] and res.summary.bytes == cli["bytes"]
    assert close(res.summary.bits_per_token, cli["bits_per_token"])
    rows = read_jsonl(tokens_path)
    assert [t.token_id for t in res.tokens] == [r["token_id"] for r in rows]
    assert max(abs(t.nll - r["nll"]) for t, r in zip(res.tokens, rows)) < 1e-5
    assert b"".join(t.piece for t in res.tokens) == book.read_bytes()
    # its new session was deleted
    assert res.session_id not in [s.id for s in py_client.list_sessions()]


def test_python_client_generates_like_the_cli_with_a_seed(brt, py_client):
    cli = json.loads(brt("generate", "--json", "--max_tokens=20", "--seed=5", "--temperature=0.7",
                         "And God said").stdout)
    gen = py_client.generate("And God said", max_tokens=20, seed=5, temperature=0.7)
    streamed = [t for t in gen]
    assert gen.text == cli["text"]
    assert "".join(t.text for t in streamed) == cli["text"]
    assert [t.token_id for t in streamed if t.token_id is not None] == [t["token_id"] for t in cli["tokens"]]
    assert gen.finish_reason == cli["finish_reason"]
    assert gen.generated_tokens == cli["generated_tokens"]
    assert py_client.complete("And God said", max_tokens=20, seed=5, temperature=0.7) == cli["text"]
    # Several tokens per message: the same items for both clients.
    cli3 = json.loads(brt("generate", "--json", "--max_tokens=20", "--seed=5", "--temperature=0.7",
                          "--stream_interval=3", "And God said").stdout)
    gen3 = py_client.generate("And God said", max_tokens=20, seed=5, temperature=0.7, stream_interval=3)
    streamed3 = [t for t in gen3]
    assert "".join(t.text for t in streamed3) == gen3.text == cli3["text"] == cli["text"]
    assert [t["token_id"] for t in cli3["tokens"]] == [t["token_id"] for t in cli["tokens"]]
    assert [t.token_id for t in streamed3 if t.token_id is not None] == [t["token_id"] for t in cli["tokens"]]
    assert [t.position for t in gen3.tokens] == [t["position"] for t in cli["tokens"]]
    assert gen3.generated_tokens == cli3["generated_tokens"] == len(gen3.tokens)


def test_python_client_sessions_and_errors(py_client, server):
    assert py_client.health() == "SERVING"
    assert py_client.server_info().model.window > 0
    with py_client.session("py", temperature=0.0) as sid:
        s = py_client.get_session(sid)
        assert s.label == "py" and s.default_sampling.temperature == 0.0
        a = py_client.score_text("In the beginning\n", session_id=sid)
        b = py_client.score_text("God created\n", session_id=sid)
        assert b.tokens[0].position == a.summary.position
        greedy = py_client.complete(session_id=sid, max_tokens=4)
        assert isinstance(greedy, str)
        assert sid in [x.id for x in py_client.list_sessions()]
    with pytest.raises(BrtError) as e:
        py_client.get_session(sid)
    assert e.value.code == grpc.StatusCode.NOT_FOUND and str(e.value).startswith("NOT_FOUND")
    with pytest.raises(BrtError) as e:
        list(py_client.generate("x", session_id=UNKNOWN_SESSION))
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(BrtError) as e:
        py_client.score_text("x", session_id=UNKNOWN_SESSION)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    with Client(dead_address(), timeout=10) as dead:
        with pytest.raises(BrtError) as e:
            dead.health()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(BrtError) as e:
            dead.score_text("x")
        assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_python_client_top_k_alternatives(py_client):
    res = py_client.score_text("In the beginning God created the heaven and the earth.\n", top_k=3)
    for t in res.tokens:
        assert len(t.top) == 3 and t.top[0].logprob >= t.top[1].logprob >= t.top[2].logprob


def test_python_client_save_restore_fork(py_client, book):
    with py_client.session("py-persist") as sid:
        py_client.score_file(book, session_id=sid)
        fork = py_client.fork_session(sid).id
        saved = py_client.save_session(sid, to_store=False, return_bytes=True)
        assert saved.snapshot_key == "" and len(saved.snapshot) == saved.size_bytes > 0
        assert sid not in py_client.list_snapshots()
        restored = py_client.restore_session(snapshot=saved.snapshot, new_id=True).id
        kw = dict(max_tokens=16, seed=9, temperature=0.8)
        want = py_client.complete(" And", session_id=sid, **kw)
        assert py_client.complete(" And", session_id=fork, **kw) == want
        assert py_client.complete(" And", session_id=restored, **kw) == want
        stored = py_client.save_session(fork)
        assert stored.snapshot_key == fork and stored.snapshot is None
        assert fork in py_client.list_snapshots()
        py_client.delete_snapshot(fork)
        assert fork not in py_client.list_snapshots()
        with pytest.raises(BrtError) as e:
            py_client.restore_session(fork)
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ValueError):
            py_client.restore_session()
        for s in (fork, restored):
            py_client.delete_session(s)


def test_python_client_package_metadata():
    assert brt_client.__version__ == "0.1.0"
