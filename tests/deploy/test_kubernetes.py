"""Validates deploy/kubernetes offline: yamllint; `kubectl kustomize` of each kustomization (when kubectl
is installed); every object against the Kubernetes schemas (tests/node/kubernetes_manifests.test.mjs,
npm kubernetes-models); then what the schemas cannot know: that probes, ports, flags, secrets, selectors,
the autoscaler's metric and the proxy agree with each other and with the server; the proxy's nginx.conf
with Debian's nginx (`nginx -t`, then a real nginx in front of three gRPC backends on loopback, checking
that calls keep to one backend per x-brt-session and that removing a backend moves only its sessions)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from concurrent import futures

import pytest
import yaml

from deploy_lint import (DEPLOY, ROOT, default_metrics_port, flag_names, flag_values,
                         parse_dockerfile, server_flags)

K8S = os.path.join(DEPLOY, "kubernetes")
PROXY_DIR = os.path.join(K8S, "base", "proxy")
KUSTOMIZATIONS = ("base", "overlays/gpu", "prometheus-adapter")
NODE_DIR = os.path.join(ROOT, "tests", "node")
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomization(name):
    with open(os.path.join(K8S, name, "kustomization.yaml")) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def base():
    """{(kind, name): object} of the base's resources, as written."""
    objs = {}
    for res in kustomization("base")["resources"]:
        for obj in load_all(os.path.join(K8S, "base", res)):
            objs[(obj["kind"], obj["metadata"]["name"])] = obj
    return objs


@pytest.fixture(scope="module")
def secrets():
    return {o["metadata"]["name"]: o for o in load_all(os.path.join(K8S, "secrets.example.yaml"))}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """`kubectl kustomize` output per kustomization, or None without kubectl."""
    if not shutil.which("kubectl"):
        return None
    out = {}
    for name in KUSTOMIZATIONS:
        r = subprocess.run(["kubectl", "kustomize", os.path.join(K8S, name)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"kubectl kustomize {name}: {r.stderr}"
        path = tmp_path_factory.mktemp("k8s") / (name.replace("/", "-") + ".yaml")
        path.write_text(r.stdout)
        out[name] = path
    return out


def container(obj, name=None):
    cs = obj["spec"]["template"]["spec"]["containers"]
    return next(c for c in cs if name is None or c["name"] == name)


def workloads(objs):
    return [o for (kind, _), o in objs.items() if kind in ("StatefulSet", "Deployment")]


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def test_yamllint():
    if not shutil.which("yamllint"):
        pytest.fail("yamllint is missing: bash deploy/install-deps.sh installs it")
    r = subprocess.run(["yamllint", "--strict", "-d", YAMLLINT_CONFIG, K8S], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kustomize_renders_each_variant(rendered):
    if rendered is None:
        pytest.skip("kubectl is not installed: kustomizations not rendered (the raw files are still validated)")
    base_objs = load_all(rendered["base"])
    cm = next(o for o in base_objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("brt-proxy"))
    assert set(cm["data"]) == {"nginx.conf", "proxy.sh"}
    proxy = next(o for o in base_objs if o["kind"] == "Deployment")
    assert proxy["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == "brt" for o in base_objs if o["kind"] != "Namespace")
    gpu = next(o for o in load_all(rendered["overlays/gpu"]) if o["kind"] == "StatefulSet"
               and o["metadata"]["name"] == "brt-server")
    c = container(gpu)
    assert c["image"].endswith(":0.1.0-cuda") and "--device=cuda:0" in c["args"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert flag_names(c["args"]).count("device") == 1


def test_objects_match_the_kubernetes_schemas(rendered):
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "kubernetes-models")):
        pytest.fail("tests/node/node_modules is missing: run `npm ci --prefix tests/node` (deploy/test.sh does)")
    env = dict(os.environ, BRT_K8S_RENDERED=os.pathsep.join(map(str, (rendered or {}).values())))
    r = subprocess.run(["node", "--test", "--test-reporter=spec", "kubernetes_manifests.test.mjs"], cwd=NODE_DIR,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "fail 0" in r.stdout, r.stdout[-6000:] + r.stderr[-3000:]


def test_replicas_probe_grpc_health_on_the_grpc_port(base):
    c = container(base[("StatefulSet", "brt-server")])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_of(flag_values(c["args"])["listen"]) == ports["grpc"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": ports["grpc"], "service": ""}, probe


def test_replica_flags_exist_and_agree_with_the_pod(base, secrets):
    sts = base[("StatefulSet", "brt-server")]
    pod, c = sts["spec"]["template"], container(sts)
    args = c["args"]
    unknown = set(flag_names(args)) - server_flags()
    assert not unknown, f"brt-server has no flags {unknown}"
    v = flag_values(args)
    assert len(v) == len(args), "every argument is --flag=value"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_of(v["metrics_address"]) == ports["metrics"] == default_metrics_port()
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    assert int(v["threads"]) == int(c["resources"]["limits"]["cpu"]), "--threads should match the CPU limit"
    assert pod["spec"]["terminationGracePeriodSeconds"] > int(v["shutdown_timeout_s"]), \
        "the kubelet would kill a replica before it has saved its sessions"
    # Key files: in the mounted Secret, under keys the Secret has.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {vol["name"]: vol for vol in pod["spec"]["volumes"]}
    for flag in ("api_keys_file", "snapshot_hmac_key_file"):
        directory, key = os.path.split(v[flag])
        volume = next(n for n, p in mounts.items() if p == directory)
        secret = volumes[volume]["secret"]["secretName"]
        assert key in secrets[secret]["stringData"], f"--{flag}: Secret {secret} has no key {key}"
    # The shared store: Redis, at the Service and port redis.yaml defines, with the password from env.
    m = re.fullmatch(r"redis://:\$\((\w+)\)@([\w-]+):(\d+)/\d+\?prefix=[\w:]+", v["snapshot_store"])
    assert m, v["snapshot_store"]
    env = {e["name"]: e for e in c["env"]}
    ref = env[m.group(1)]["valueFrom"]["secretKeyRef"]
    assert ref["key"] in secrets[ref["name"]]["stringData"]
    redis_svc = base[("Service", m.group(2))]
    assert int(m.group(3)) in [p["port"] for p in redis_svc["spec"]["ports"]]
    assert int(v["autosave_every_blocks"]) > 0, "failover restores from autosaves"
    # The image's user.
    uid = parse_dockerfile(os.path.join(DEPLOY, "docker", "Dockerfile"))[-1].all("USER")[-1].split(":")[0]
    assert pod["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_workloads_have_resources_and_run_unprivileged(base):
    for w in workloads(base):
        spec = w["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, w["metadata"]["name"]
        assert spec.get("automountServiceAccountToken") is False
        for c in spec["containers"]:
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"], c["name"]
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert re.search(r":\d[\w.-]*$", c["image"]) and not c["image"].endswith(":latest"), c["image"]


def test_services_and_selectors_line_up(base):
    pods = {w["metadata"]["name"]: w for w in workloads(base)}

    def selected(selector):
        return [n for n, w in pods.items()
                if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]

    for w in pods.values():
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    for (kind, name), obj in base.items():
        if kind == "Service":
            (target,) = selected(obj["spec"]["selector"])
            names = {p["name"] for c in pods[target]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            for p in obj["spec"]["ports"]:
                assert p["targetPort"] in names, f"Service {name}: no container port {p['targetPort']}"
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            sel = obj["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"]["matchLabels"]
            assert len(selected(sel)) == 1, f"{kind} {name} selects {selected(sel)}"
    sts = base[("StatefulSet", "brt-server")]
    headless = base[("Service", sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"


def test_referenced_secrets_and_configmaps_exist(base, secrets):
    generated = {g["name"]: g["files"] for g in kustomization("base")["configMapGenerator"]}
    for files in generated.values():
        assert all(os.path.exists(os.path.join(K8S, "base", f)) for f in files)
    for w in workloads(base):
        spec = w["spec"]["template"]["spec"]
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                assert vol["secret"]["secretName"] in secrets, vol
            if "configMap" in vol:
                assert vol["configMap"]["name"] in generated, vol
        for c in spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], ref
            for arg in c.get("args", []):
                for var in re.findall(r"\$\((\w+)\)", arg):
                    assert var in {e["name"] for e in c["env"]}, f"{arg}: $({var}) is not in env"
    proxy_volumes = base[("Deployment", "brt-proxy")]["spec"]["template"]["spec"]["volumes"]
    tls = secrets[next(v["secret"]["secretName"] for v in proxy_volumes if v["name"] == "tls")]
    assert tls["type"] == "kubernetes.io/tls" and {"tls.crt", "tls.key"} <= set(tls["stringData"])


def test_autoscaler_metric_is_a_real_gauge_served_by_the_adapter(base, tmp_path):
    hpa = base[("HorizontalPodAutoscaler", "brt-server")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "brt-server"}
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    with open(os.path.join(ROOT, "tests", "metrics", "metric_names.txt")) as f:
        catalogue = dict(line.split() for line in f if line.strip())
    assert catalogue.get(name) == "gauge", f"{name} is not a gauge the server exports"
    (adapter_cm,) = load_all(os.path.join(K8S, "prometheus-adapter", "adapter-config.yaml"))
    rules = yaml.safe_load(adapter_cm["data"]["config.yaml"])["rules"]
    rule = next(r for r in rules if r["name"]["as"] == name)
    assert rule["seriesQuery"].startswith(name + "{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    # The query's PromQL, with the adapter's template filled in, through promtool.
    query = (rule["metricsQuery"].replace("<<.Series>>", name)
             .replace("<<.LabelMatchers>>", 'namespace="brt",pod=~"brt-server-.*"').replace("<<.GroupBy>>", "pod"))
    if shutil.which("promtool"):
        rules_file = tmp_path / "rules.yml"
        rules_file.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": [
            {"record": "brt:adapter_query", "expr": query}]}]}))
        r = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    # The proxy must know every replica the autoscaler can make.
    proxy_env = {e["name"]: e.get("value") for e in container(base[("Deployment", "brt-proxy")])["env"]}
    assert hpa["spec"]["maxReplicas"] <= int(proxy_env["BRT_MAX_REPLICAS"])
    assert 1 <= base[("PodDisruptionBudget", "brt-server")]["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def read(path):
    with open(path) as f:
        return f.read()


def test_proxy_routes_sessions_by_header_to_the_replicas(base):
    conf = read(os.path.join(PROXY_DIR, "nginx.conf"))
    script = read(os.path.join(PROXY_DIR, "proxy.sh"))
    assert re.search(r"map \$http_x_brt_session \$brt_affinity_key \{", conf)
    assert re.search(r"upstream brt_replicas \{\s*hash \$brt_affinity_key consistent;", conf)
    assert "grpc_pass grpc://brt_replicas;" in conf
    run_dir = re.search(r'RUN_DIR="\$\{BRT_PROXY_RUN_DIR:-([^}]+)\}"', script).group(1)
    assert f"include {run_dir}/upstream.conf;" in conf
    proxy = base[("Deployment", "brt-proxy")]
    c = container(proxy)
    env = {e["name"]: e["value"] for e in c["env"]}
    sts = base[("StatefulSet", "brt-server")]
    assert env["BRT_STATEFULSET"] == sts["metadata"]["name"]
    assert env["BRT_HEADLESS_SERVICE"] == sts["spec"]["serviceName"]
    grpc_port = port_of(flag_values(container(sts)["args"])["listen"])
    assert re.search(r'PORT="\$\{BRT_GRPC_PORT:-%d\}"' % grpc_port, script)
    listen = int(re.search(r"listen (\d+) ssl http2;", conf).group(1))
    assert listen == c["ports"][0]["containerPort"] == base[("Service", "brt-proxy")]["spec"]["ports"][0]["port"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert c["command"] == ["/bin/sh", mounts["conf"] + "/proxy.sh"]
    assert re.search(r'CONF="\$\{BRT_PROXY_CONF:-%s/nginx.conf\}"' % re.escape(mounts["conf"]), script)
    assert f"ssl_certificate {mounts['tls']}/tls.crt;" in conf
    assert "client_max_body_size 0;" in conf, "a Score stream sends a whole book in one request body"


def test_proxy_script_lints():
    script = os.path.join(PROXY_DIR, "proxy.sh")
    assert subprocess.run(["sh", "-n", script]).returncode == 0
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-s", "sh", script], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
    r = subprocess.run(["sh", script, "upstream"], env=dict(os.environ, BRT_MAX_REPLICAS="2"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("server "), r.stdout + r.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxy_files(tmp_path):
    """The proxy's nginx.conf with its paths moved under tmp_path, a self-signed certificate for
    localhost, and the upstream list proxy.sh writes when no replica resolves."""
    if not shutil.which("nginx"):
        pytest.fail("nginx is missing: bash deploy/install-deps.sh installs it")
    etc, run = tmp_path / "etc", tmp_path / "run"
    (etc / "tls").mkdir(parents=True)
    run.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(etc / "tls" / "tls.key"),
                    "-out", str(etc / "tls" / "tls.crt")], check=True, capture_output=True)
    port = free_port()
    conf = (read(os.path.join(PROXY_DIR, "nginx.conf")).replace("/etc/brt-proxy/", f"{etc}/")
            .replace("/tmp/brt-proxy", str(run)).replace("listen 50051 ", f"listen 127.0.0.1:{port} "))
    (etc / "nginx.conf").write_text(conf)
    upstream = subprocess.run(["sh", os.path.join(PROXY_DIR, "proxy.sh"), "upstream"], check=True,
                              capture_output=True, text=True).stdout
    (run / "upstream.conf").write_text(upstream)
    return {"conf": etc / "nginx.conf", "prefix": tmp_path, "run": run, "port": port,
            "cert": (etc / "tls" / "tls.crt").read_bytes()}


def nginx(files, *args):
    return ["nginx", "-e", "stderr", "-p", str(files["prefix"]), "-c", str(files["conf"]), *args]


def test_proxy_nginx_config_is_valid(proxy_files):
    r = subprocess.run(nginx(proxy_files, "-t"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_proxy_keeps_each_session_on_one_replica(proxy_files):
    """Three gRPC backends that answer with their own name; the real nginx.conf in front of them."""
    grpc = pytest.importorskip("grpc")

    class Named(grpc.GenericRpcHandler):
        def __init__(self, name):
            self.name = name.encode()

        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: self.name)

    backends = {}
    for name in ("r0", "r1", "r2"):
        server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[Named(name)])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        backends[name] = (server, port)

    def write_upstream(names):
        (proxy_files["run"] / "upstream.conf").write_text("".join(
            f"server 127.0.0.1:{backends[n][1]} max_fails=1 fail_timeout=5s;\n" for n in names))

    write_upstream(backends)
    proc = subprocess.Popen(nginx(proxy_files, "-g", "daemon off;"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", proxy_files["port"]), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
                time.sleep(0.1)

        def route(calls):
            creds = grpc.ssl_channel_credentials(root_certificates=proxy_files["cert"])
            with grpc.secure_channel(f"localhost:{proxy_files['port']}", creds) as channel:
                call = channel.unary_unary("/brt.v1.Brt/GetSession")
                return [call(b"", metadata=md, timeout=10).decode() for md in calls]

        sessions = [f"s_{i:032x}" for i in range(60)]
        first = route([[("x-brt-session", s)] for s in sessions])
        again = route([[("x-brt-session", s)] for s in reversed(sessions)])[::-1]
        assert first == again, "a session's calls went to two replicas"
        assert set(first) == set(backends), f"sessions reached only {set(first)}"
        assert len(set(route([[]] * 30))) > 1, "calls without a session all went to one replica"

        # Take r2 away (what proxy.sh does when its DNS record goes): only r2's sessions move.
        write_upstream(["r0", "r1"])
        subprocess.run(nginx(proxy_files, "-s", "reload"), check=True, capture_output=True)
        time.sleep(1)
        after = route([[("x-brt-session", s)] for s in sessions])
        moved = [s for s, a, b in zip(sessions, first, after) if a != b]
        assert moved and all(first[sessions.index(s)] == "r2" for s in moved), "sessions of r0/r1 moved"
        assert "r2" not in after
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        for server, _ in backends.values():
            server.stop(None)


def test_runbook_scrape_job_is_a_valid_prometheus_config(tmp_path):
    """deploy/README.md's Kubernetes scrape job: the job name the alert rules expect, the labels the adapter
    rule needs, and `promtool check config` on its relabelling (Debian's Prometheus is built without
    Kubernetes discovery, so the job is checked with a static target in its place)."""
    text = read(os.path.join(DEPLOY, "README.md"))
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "kubernetes_sd_configs" in b]
    (job,) = yaml.safe_load(block)["scrape_configs"]
    assert job["job_name"] == "brt-server"
    assert 'job="brt-server"' in read(os.path.join(DEPLOY, "prometheus", "alerts.yml"))
    assert {"namespace", "pod", "__address__"} <= {r.get("target_label") for r in job["relabel_configs"]}
    if not shutil.which("promtool"):
        pytest.skip("promtool (Debian package prometheus) is not installed")
    sd = job.pop("kubernetes_sd_configs")
    assert sd == [{"role": "pod", "namespaces": {"names": ["brt"]}}]
    job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    r = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
