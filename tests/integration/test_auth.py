"""API keys, tenants, TLS and mutual TLS against the real brt-server (issue 11, "Authentication and tenants").

Every RPC is tried with no key, a wrong key, another tenant's session id and another tenant's snapshot key, over
plaintext, TLS and mutual TLS; each must be refused with the right code, and the other tenant's sessions must be
untouched. Certificates are made here with the openssl command-line tool.
"""
import hashlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

import grpc
import pytest

from conftest import BUILD, ROOT, SERVER_BIN, STUBS, BrtServer, free_port, score
from http_util import Http

pb = STUBS.pb
KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-9876543210", "carol": "carol-key-abcdef"}
ANOTHER_ID = "s_" + "0" * 32  # well-formed, never issued


def digest(key):
    return hashlib.sha256(key.encode()).hexdigest()


def write_keys(path, tenants):
    lines = ["# tenant  sha256(key)  quotas"]
    for t in tenants:
        extra = " max_sessions=2 max_calls=1" if t == "carol" else ""
        lines.append(f"{t} {digest(KEYS[t])}{extra}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def md(tenant=None, key=None, session=None):
    out = []
    if tenant is not None:
        out.append(("authorization", f"Bearer {KEYS[tenant]}"))
    if key is not None:
        out.append(("authorization", key))
    if session is not None:
        out.append(("x-brt-session", session))
    return tuple(out)


# ---- certificates -----------------------------------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_cert(d, ca, name, cn, server=False):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=d)
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", ext, "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="brt-pki-")
    make_ca(d, "ca")
    make_ca(d, "rogue_ca")
    make_cert(d, "ca", "server", "localhost", server=True)
    make_cert(d, "ca", "client_alice", "alice")
    make_cert(d, "ca", "client_bad_name", "not a tenant!")
    make_cert(d, "rogue_ca", "client_rogue", "alice")
    read = lambda n: open(os.path.join(d, n), "rb").read()  # noqa: E731
    return {"dir": d, "read": read, "path": lambda n: os.path.join(d, n)}


@pytest.fixture(scope="module")
def keys_file():
    path = tempfile.mktemp(prefix="brt-keys-")
    write_keys(path, ["alice", "bob", "carol"])
    return path


# ---- servers ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(keys_file):
    store = tempfile.mkdtemp(prefix="brt-auth-store-")
    http_port = free_port()
    s = BrtServer(f"--api_keys_file={keys_file}", f"--snapshot_store=file://{store}",
                  f"--http_listen=127.0.0.1:{http_port}")
    s.store_dir = store
    s.http = Http(http_port)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tls(keys_file, pki):
    creds = grpc.ssl_channel_credentials(root_certificates=pki["read"]("ca.pem"))
    s = BrtServer(f"--api_keys_file={keys_file}", f"--tls_cert_file={pki['path']('server.pem')}",
                  f"--tls_key_file={pki['path']('server.key')}", credentials=creds)
    yield s
    s.stop()


def mtls_creds(pki, client="client_alice"):
    return grpc.ssl_channel_credentials(root_certificates=pki["read"]("ca.pem"),
                                        private_key=pki["read"](f"{client}.key"),
                                        certificate_chain=pki["read"](f"{client}.pem"))


@pytest.fixture(scope="module")
def mtls(keys_file, pki):
    s = BrtServer(f"--api_keys_file={keys_file}", f"--tls_cert_file={pki['path']('server.pem')}",
                  f"--tls_key_file={pki['path']('server.key')}", f"--tls_client_ca_file={pki['path']('ca.pem')}",
                  credentials=mtls_creds(pki))
    yield s
    s.stop()


# ---- the RPC x credentials matrix ----------------------------------------------------------------------------

def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def score_call(stub, sid, metadata, text=b"In the beginning.\n"):
    reqs = iter([pb.ScoreRequest(session_id=sid, text=text)])
    return list(stub.Score(reqs, timeout=60, metadata=metadata))


def generate_call(stub, sid, metadata):
    return list(stub.Generate(pb.GenerateRequest(session_id=sid, max_tokens=2), timeout=60, metadata=metadata))


def session_rpcs(stub, sid, metadata):
    """Every RPC that names a session, as (name, thunk)."""
    return [
        ("GetSession", lambda: stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30, metadata=metadata)),
        ("Score", lambda: score_call(stub, sid, metadata)),
        ("Generate", lambda: generate_call(stub, sid, metadata)),
        ("SaveSession", lambda: stub.SaveSession(pb.SaveSessionRequest(session_id=sid, return_bytes=True),
                                                 timeout=30, metadata=metadata)),
        ("ForkSession", lambda: stub.ForkSession(pb.ForkSessionRequest(session_id=sid), timeout=30,
                                                 metadata=metadata)),
        ("RewindSession", lambda: stub.RewindSession(pb.RewindSessionRequest(session_id=sid, position=1),
                                                     timeout=30, metadata=metadata)),
        ("DeleteSession", lambda: stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=30,
                                                     metadata=metadata)),
    ]


def snapshot_rpcs(stub, key, metadata):
    return [
        ("RestoreSession", lambda: stub.RestoreSession(pb.RestoreSessionRequest(snapshot_key=key, new_id=True),
                                                       timeout=30, metadata=metadata)),
        ("DeleteSnapshot", lambda: stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_key=key), timeout=30,
                                                       metadata=metadata)),
    ]


def other_rpcs(stub, metadata):
    return [
        ("CreateSession", lambda: stub.CreateSession(pb.CreateSessionRequest(), timeout=30, metadata=metadata)),
        ("ListSessions", lambda: stub.ListSessions(pb.ListSessionsRequest(), timeout=30, metadata=metadata)),
        ("ListSnapshots", lambda: stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=30, metadata=metadata)),
        ("GetServerInfo", lambda: stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30, metadata=metadata)),
        ("RestoreSession(bytes)", lambda: stub.RestoreSession(pb.RestoreSessionRequest(snapshot=b"x"),
                                                              timeout=30, metadata=metadata)),
    ]


def alice_session_with_snapshot(stub, alice_md):
    sid = stub.CreateSession(pb.CreateSessionRequest(label="alice's"), timeout=30, metadata=alice_md).id
    score_call(stub, sid, alice_md + (("x-brt-session", sid),), b"And God said, Let there be light.\n" * 20)
    saved = stub.SaveSession(pb.SaveSessionRequest(session_id=sid), timeout=30, metadata=alice_md)
    assert saved.snapshot_key == sid
    return sid, stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30, metadata=alice_md)


def check_matrix(stub, alice_md, bob_md, certificate_names_tenant=False):
    """certificate_names_tenant: the channel presents a client certificate (mTLS), so a call without a key is
    not anonymous: it acts for the certificate's tenant."""
    sid, before = alice_session_with_snapshot(stub, alice_md)
    every = (session_rpcs(stub, sid, ()) + snapshot_rpcs(stub, sid, ()) + other_rpcs(stub, ()))
    # No key, and wrong keys: UNAUTHENTICATED for every RPC, whatever it names.
    wrong = [(("authorization", "Bearer not-a-key"),), (("authorization", KEYS["alice"]),)]
    for creds in ([] if certificate_names_tenant else [()]) + wrong:
        for name, _ in every:
            thunks = dict(session_rpcs(stub, sid, creds) + snapshot_rpcs(stub, sid, creds) + other_rpcs(stub, creds))
            code, details = code_of(thunks[name])
            assert code == grpc.StatusCode.UNAUTHENTICATED, (name, creds, code, details)
            assert "key" in details or "authorization" in details, details
    # Another tenant's session id and snapshot key: NOT_FOUND, worded exactly like an id that does not exist.
    for name, thunk in session_rpcs(stub, sid, bob_md):
        code, details = code_of(thunk)
        assert code == grpc.StatusCode.NOT_FOUND, (name, code, details)
        code2, details2 = code_of(dict(session_rpcs(stub, ANOTHER_ID, bob_md))[name])
        assert code2 == grpc.StatusCode.NOT_FOUND, (name, code2, details2)
        assert details == details2.replace(ANOTHER_ID, sid), (name, details, details2)
    for name, thunk in snapshot_rpcs(stub, sid, bob_md):
        code, details = code_of(thunk)
        assert code == grpc.StatusCode.NOT_FOUND, (name, code, details)
    # Lists show only the caller's own.
    assert sid not in [s.id for s in stub.ListSessions(pb.ListSessionsRequest(), timeout=30, metadata=bob_md).sessions]
    assert sid not in stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=30, metadata=bob_md).snapshot_keys
    assert sid in [s.id for s in stub.ListSessions(pb.ListSessionsRequest(), timeout=30, metadata=alice_md).sessions]
    assert sid in stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=30, metadata=alice_md).snapshot_keys
    # Nothing bob tried changed alice's session or her snapshot.
    after = stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30, metadata=alice_md)
    assert (after.position, after.label) == (before.position, before.label)
    restored = stub.RestoreSession(pb.RestoreSessionRequest(snapshot_key=sid, new_id=True), timeout=30,
                                   metadata=alice_md)
    assert restored.position == before.position
    # And bob's own calls work.
    for name, thunk in other_rpcs(stub, bob_md)[:4]:
        assert code_of(thunk)[0] == grpc.StatusCode.OK, name
    return sid


def test_plaintext_keys_matrix(plain):
    check_matrix(plain.stub, md("alice"), md("bob"))


def test_tls_keys_matrix(tls):
    check_matrix(tls.stub, md("alice"), md("bob"))


def test_mtls_matrix_and_certificate_tenant(mtls, pki):
    sid = check_matrix(mtls.stub, md("alice"), md("bob"), certificate_names_tenant=True)
    # With a client certificate and no key, the certificate's common name (alice) is the tenant.
    r = mtls.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30)
    assert r.id == sid
    # A certificate whose common name is not a tenant name is refused.
    ch = grpc.secure_channel(mtls.address, mtls_creds(pki, "client_bad_name"))
    code, details = code_of(lambda: STUBS.rpc.BrtStub(ch).ListSessions(pb.ListSessionsRequest(), timeout=30))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "common name" in details, details
    ch.close()
    # No client certificate, or one from another CA: the TLS handshake fails (no call reaches the service).
    for creds in [grpc.ssl_channel_credentials(root_certificates=pki["read"]("ca.pem")), mtls_creds(pki, "client_rogue")]:
        ch = grpc.secure_channel(mtls.address, creds)
        code, _ = code_of(lambda: STUBS.rpc.BrtStub(ch).ListSessions(pb.ListSessionsRequest(), timeout=10,
                                                                      metadata=md("alice")))
        assert code == grpc.StatusCode.UNAVAILABLE, code
        ch.close()


def test_plaintext_client_cannot_reach_tls_server(tls):
    ch = grpc.insecure_channel(tls.address)
    code, _ = code_of(lambda: STUBS.rpc.BrtStub(ch).ListSessions(pb.ListSessionsRequest(), timeout=10,
                                                                  metadata=md("alice")))
    assert code == grpc.StatusCode.UNAVAILABLE
    ch.close()


# ---- health, affinity, store layout, quotas, reload, metrics ------------------------------------------------

def test_health_needs_no_key(plain):
    r = plain.health.Check(STUBS.health.HealthCheckRequest(service=""), timeout=10)
    assert r.status == STUBS.health.HealthCheckResponse.SERVING


def test_affinity_header_must_match_the_request(plain):
    a = md("alice")
    sid = plain.stub.CreateSession(pb.CreateSessionRequest(), timeout=30, metadata=a).id
    assert plain.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30,
                                 metadata=a + (("x-brt-session", sid),)).id == sid
    for thunk in [lambda: plain.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30,
                                                metadata=a + (("x-brt-session", ANOTHER_ID),)),
                  lambda: score_call(plain.stub, sid, a + (("x-brt-session", ANOTHER_ID),)),
                  lambda: generate_call(plain.stub, sid, a + (("x-brt-session", ANOTHER_ID),))]:
        code, details = code_of(thunk)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "x-brt-session" in details, details


def test_store_keys_are_namespaced_by_tenant(plain):
    a = md("alice")
    sid = plain.stub.CreateSession(pb.CreateSessionRequest(), timeout=30, metadata=a).id
    plain.stub.SaveSession(pb.SaveSessionRequest(session_id=sid), timeout=30, metadata=a)
    names = os.listdir(plain.store_dir)
    assert any(n.startswith(f"alice-{sid}") for n in names), names
    assert not any(n.startswith(sid) for n in names), names


def test_quotas_name_the_quota(plain):
    c = md("carol")
    ids = [plain.stub.CreateSession(pb.CreateSessionRequest(), timeout=30, metadata=c).id for _ in range(2)]
    code, details = code_of(lambda: plain.stub.CreateSession(pb.CreateSessionRequest(), timeout=30, metadata=c))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_sessions" in details, details
    code, details = code_of(lambda: plain.stub.ForkSession(pb.ForkSessionRequest(session_id=ids[0]), timeout=30,
                                                           metadata=c))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_sessions" in details, details
    # Another tenant is not affected by carol's quota.
    plain.stub.CreateSession(pb.CreateSessionRequest(), timeout=30, metadata=md("bob"))
    # max_calls=1: while one Generate runs, a second call of carol's is refused.
    stream = plain.stub.Generate(pb.GenerateRequest(session_id=ids[0], max_tokens=4000), timeout=120, metadata=c)
    first = next(stream)  # the call is running
    assert first.text is not None
    code, details = code_of(lambda: score_call(plain.stub, ids[1], c))
    stream.cancel()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_calls" in details, details
    # Once it has ended, carol can call again (the slot is freed when the call ends).
    deadline = time.time() + 10
    while True:
        code, details = code_of(lambda: score_call(plain.stub, ids[1], c))
        if code == grpc.StatusCode.OK or time.time() > deadline:
            break
        time.sleep(0.1)
    assert code == grpc.StatusCode.OK, details
    for i in ids:
        plain.stub.DeleteSession(pb.DeleteSessionRequest(session_id=i), timeout=30, metadata=c)


def test_tenant_metrics(plain):
    plain.stub.ListSessions(pb.ListSessionsRequest(), timeout=30, metadata=md("bob"))
    code_of(lambda: plain.stub.ListSessions(pb.ListSessionsRequest(), timeout=30))
    code_of(lambda: plain.stub.GetSession(pb.GetSessionRequest(session_id=ANOTHER_ID), timeout=30,
                                          metadata=md("carol")))
    body = urllib.request.urlopen(f"http://{plain.metrics_address}/metrics", timeout=10).read().decode()
    assert re.search(r'brt_tenant_requests_total\{code="OK",tenant="bob"\} [1-9]', body), body[:3000]
    assert re.search(r'brt_tenant_requests_total\{code="NOT_FOUND",tenant="carol"\} [1-9]', body), body[:3000]
    assert re.search(r'brt_requests_total\{code="UNAUTHENTICATED",method="ListSessions"\} [1-9]', body)
    assert 'tenant=""' not in body


def test_sighup_reloads_keys_without_dropping_sessions():
    path = tempfile.mktemp(prefix="brt-keys-")
    write_keys(path, ["alice", "bob"])
    s = BrtServer(f"--api_keys_file={path}")
    try:
        sid = s.stub.CreateSession(pb.CreateSessionRequest(), timeout=30, metadata=md("alice")).id
        write_keys(path, ["alice", "carol"])  # bob's key retired, carol's added
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while code_of(lambda: s.stub.ListSessions(pb.ListSessionsRequest(), timeout=5, metadata=md("carol")))[0] \
                != grpc.StatusCode.OK:
            assert time.time() < deadline, s.read_log()
            time.sleep(0.1)
        assert code_of(lambda: s.stub.ListSessions(pb.ListSessionsRequest(), timeout=5, metadata=md("bob")))[0] \
            == grpc.StatusCode.UNAUTHENTICATED
        assert s.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30, metadata=md("alice")).id == sid
        # A broken file is refused and the keys in force stay.
        with open(path, "w") as f:
            f.write("alice not-a-digest\n")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "keeping the previous API keys" not in s.read_log():
            assert time.time() < deadline, s.read_log()
            time.sleep(0.1)
        assert "line 1" in s.read_log()
        assert s.stub.GetSession(pb.GetSessionRequest(session_id=sid), timeout=30, metadata=md("alice")).id == sid
    finally:
        s.stop()


def run_server_briefly(*args, timeout=60):
    port = free_port()
    p = subprocess.Popen([SERVER_BIN, f"--model_dir={os.path.join(ROOT, 'model', 'artifacts')}", "--threads=1",
                          "--metrics_address=", *[a.replace("PORT", str(port)) for a in args]],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tempfile.mkdtemp())
    return p, port


def test_secure_by_default_refuses_a_public_address_without_auth():
    p, _ = run_server_briefly("--listen=0.0.0.0:PORT")
    out, _ = p.communicate(timeout=60)
    assert p.returncode != 0
    assert b"not a loopback address" in out and b"--allow_unauthenticated" in out, out[-2000:]
    p, _ = run_server_briefly("--listen=127.0.0.1:PORT", "--http_listen=0.0.0.0:0")
    out, _ = p.communicate(timeout=60)
    assert p.returncode != 0 and b"not a loopback address" in out, out[-2000:]
    # Allowed explicitly, or with keys configured.
    keys = tempfile.mktemp(prefix="brt-keys-")
    write_keys(keys, ["alice"])
    for extra in (["--allow_unauthenticated"], [f"--api_keys_file={keys}"]):
        p, port = run_server_briefly("--listen=0.0.0.0:PORT", *extra)
        try:
            deadline = time.time() + 60
            ch = grpc.insecure_channel(f"127.0.0.1:{port}")
            health = STUBS.health_rpc.HealthStub(ch)
            while True:
                assert p.poll() is None, p.stdout.read()[-2000:]
                try:
                    if health.Check(STUBS.health.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                assert time.time() < deadline
                time.sleep(0.2)
            ch.close()
        finally:
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=60)


def test_bad_keys_file_is_refused_at_start():
    path = tempfile.mktemp(prefix="brt-keys-")
    with open(path, "w") as f:
        f.write(f"alice {digest('k')}\nbob-with-dash {digest('j')}\n")
    p, _ = run_server_briefly(f"--api_keys_file={path}", "--listen=127.0.0.1:PORT")
    out, _ = p.communicate(timeout=60)
    assert p.returncode != 0 and b"line 2" in out and b"tenant name" in out, out[-2000:]


# ---- HTTP ----------------------------------------------------------------------------------------------------

def test_http_uses_the_same_keys_and_tenants(plain):
    h = plain.http
    body = {"prompt": "In the beginning", "max_tokens": 2, "temperature": 0}
    st, r = h.request("POST", "/v1/completions", body)
    assert st == 401 and r["error"]["type"] == "authentication_error" and "API key" in r["error"]["message"], r
    st, r = h.request("POST", "/v1/completions", body, headers={"Authorization": "Bearer wrong"})
    assert st == 401, r
    for path, method, b in [("/tokenize", "POST", {"prompt": "x"}), ("/v1/models", "GET", None),
                            ("/tokenizer_info", "GET", None), ("/detokenize", "POST", {"tokens": [1]})]:
        st, _ = h.request(method, path, b)
        assert st == 401, path
    st, r = h.request("POST", "/v1/completions", body, headers={"Authorization": f"Bearer {KEYS['alice']}"})
    assert st == 200 and r["choices"][0]["text"] is not None, r
    assert h.get("/health")[0] == 200
    # A session of alice's, continued over HTTP: bob gets 404, alice gets her session.
    sid = plain.stub.CreateSession(pb.CreateSessionRequest(), timeout=30, metadata=md("alice")).id
    st, r = h.request("POST", "/v1/completions", {**body, "session_id": sid},
                      headers={"Authorization": f"Bearer {KEYS['bob']}"})
    assert st == 404, r
    st, r = h.request("POST", "/v1/completions", {**body, "session_id": sid},
                      headers={"Authorization": f"Bearer {KEYS['alice']}"})
    assert st == 200 and r["choices"][0]["session_id"] == sid, r


# ---- the clients speak it ------------------------------------------------------------------------------------

def test_python_client_and_cli_speak_keys_and_mtls(plain, mtls, pki):
    import sys
    sys.path.insert(0, os.path.join(ROOT, "client", "python"))
    from brt_client import Client, BrtError
    with Client(plain.address, api_key=KEYS["alice"]) as c:
        s = c.create_session(label="py")
        assert c.get_session(s.id).id == s.id
        r = c.score_text("In the beginning God created the heaven and the earth.\n", session_id=s.id)
        assert "".join(g.text for g in c.generate(session_id=s.id, max_tokens=3, temperature=0)) is not None
        assert r.summary.tokens > 0
    with Client(plain.address, api_key=KEYS["bob"]) as c:
        with pytest.raises(BrtError) as e:
            c.get_session(s.id)
        assert e.value.code == grpc.StatusCode.NOT_FOUND
    with Client(plain.address) as c:
        with pytest.raises(BrtError) as e:
            c.list_sessions()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(mtls.address, root_cert=pki["path"]("ca.pem"), cert_chain=pki["path"]("client_alice.pem"),
                private_key=pki["path"]("client_alice.key")) as c:
        s2 = c.create_session(label="mtls")
        assert s2.id in [x.id for x in c.list_sessions()]
    brt = os.path.join(BUILD, "bin", "brt")
    env = {**os.environ, "BRT_API_KEY": KEYS["alice"]}
    out = subprocess.run([brt, f"--server={plain.address}", "sessions", "list"], capture_output=True, env=env,
                         timeout=60)
    assert out.returncode == 0 and s.id.encode() in out.stdout, out
    out = subprocess.run([brt, f"--server={mtls.address}", f"--tls_root_cert={pki['path']('ca.pem')}",
                          f"--tls_cert={pki['path']('client_alice.pem')}",
                          f"--tls_key={pki['path']('client_alice.key')}", "sessions", "list"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0 and s2.id.encode() in out.stdout, out
    out = subprocess.run([brt, f"--server={plain.address}", "sessions", "list"], capture_output=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "BRT_API_KEY"})
    assert out.returncode == 1 and b"UNAUTHENTICATED" in out.stderr, out
