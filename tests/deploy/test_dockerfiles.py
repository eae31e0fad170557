"""Lints deploy/docker/Dockerfile (CPU) and Dockerfile.cuda. No Docker daemon runs in CI, so the images are
not built here; these are the properties a build would otherwise reveal late or never: pinned bases,
a non-root user that exists, a health check that the CLI can run, apt hygiene, package lists equal to
deploy/install-deps.sh's, runtime packages that cover the binaries' shared libraries, and a build
context that holds every file the build needs (checked by running CMake's configure step on exactly
the files the build stage copies)."""
import hashlib
import os
import posixpath
import re
import shutil
import socket
import subprocess
import time

import pytest

from deploy_lint import (DEPLOY, PACKAGE_LISTS, ROOT, default_metrics_port, dockerignored,
                         exec_form, flag_names, flag_values, git_files, install_deps_packages, package_list,
                         parse_copy, parse_dockerfile, read_dockerignore, server_flags)

DOCKERFILES = {"cpu": os.path.join(DEPLOY, "docker", "Dockerfile"),
               "cuda": os.path.join(DEPLOY, "docker", "Dockerfile.cuda")}
# The package lists each stage installs (deploy/packages/NAME.txt). The CUDA image takes LibTorch from
# PyTorch's wheel instead of Debian's.
EXPECTED_LISTS = {"cpu": ({"build", "torch-build"}, {"runtime", "torch-runtime"}),
                  "cuda": ({"build"}, {"runtime"})}
BIN_DIR = "/opt/brt/build/bin"


@pytest.fixture(params=sorted(DOCKERFILES))
def variant(request):
    return request.param


@pytest.fixture
def stages(variant):
    return parse_dockerfile(DOCKERFILES[variant])


def final_stage(stages):
    return stages[-1]


def test_multi_stage_on_one_pinned_debian_base(stages):
    assert len(stages) == 2, "a build stage and a runtime stage"
    bases = {s.base for s in stages}
    assert len(bases) == 1, f"build and runtime stages must share the base (library ABI): {bases}"
    base = bases.pop()
    assert re.fullmatch(r"debian:12\.\d+-slim(@sha256:[0-9a-f]{64})?", base), \
        f"base image {base!r} is not a pinned Debian 12 point release"
    for s in stages:
        for args in s.all("COPY"):
            source_stage = parse_copy(args)[0].get("from")
            assert source_stage in (None, stages[0].name), f"COPY --from={source_stage}"
    assert "latest" not in open(DOCKERFILES["cpu"]).read().replace("# ", "")


def test_final_stage_runs_as_a_non_root_user_it_creates(stages):
    final = final_stage(stages)
    users = final.all("USER")
    assert users, "no USER in the final stage: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: use a numeric non-root uid (Kubernetes " \
        "runAsNonRoot can only verify a numeric one)"
    runs = " ".join(final.all("RUN"))
    assert f"--uid {uid}" in runs and (not gid or f"--gid {gid}" in runs), f"uid {uid} is not created"


HEALTHCHECK_SCRIPT = os.path.join(DEPLOY, "docker", "healthcheck.sh")


def test_healthcheck_uses_grpc_health_through_the_cli(stages):
    final = final_stage(stages)
    checks = final.all("HEALTHCHECK")
    assert len(checks) == 1 and "NONE" not in checks[0]
    command = exec_form(checks[0].split(" CMD ", 1)[1].strip())
    assert command == ["/bin/sh", "/opt/brt/healthcheck.sh"], command
    copied = [parse_copy(a) for a in final.all("COPY")]
    assert (["deploy/docker/healthcheck.sh"], "/opt/brt/") in [(srcs, dest) for _, srcs, dest in copied]
    assert any(posixpath.basename(src) == "brt" and dest.rstrip("/") == BIN_DIR for _, srcs, dest in copied
               for src in srcs), "the health check's brt binary is not copied to the final stage"
    script = open(HEALTHCHECK_SCRIPT).read()
    assert '"${BRT_CLI:-%s/brt}" health' % BIN_DIR in script
    assert subprocess.run(["sh", "-n", HEALTHCHECK_SCRIPT]).returncode == 0
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-s", "sh", HEALTHCHECK_SCRIPT], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_healthcheck_passes_on_a_real_server_with_keys_and_fails_without_one(tmp_path):
    """The script against build/bin/brt-server (the tiny test model, loopback, API keys): SERVING passes
    although the CLI's second call has no key; no server fails."""
    server_bin, cli = (os.path.join(ROOT, "build", "bin", b) for b in ("brt-server", "brt"))
    if not (os.path.exists(server_bin) and os.path.exists(cli)):
        pytest.skip("needs build/bin/brt-server and build/bin/brt (deploy/build.sh)")
    keys = tmp_path / "keys.txt"
    keys.write_text("tenant_a " + hashlib.sha256(b"a-key").hexdigest() + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, BRT_CLI=cli, BRT_SERVER=f"127.0.0.1:{port}")
    env.pop("BRT_API_KEY", None)

    def check():
        return subprocess.run(["sh", HEALTHCHECK_SCRIPT], env=env, capture_output=True, text=True, timeout=30)

    server = subprocess.Popen([server_bin, f"--model_dir={ROOT}/tests/data/tiny", f"--listen=127.0.0.1:{port}",
                               "--metrics_address=", "--snapshot_store=", "--threads=1",
                               f"--api_keys_file={keys}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while (r := check()).returncode != 0:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.time() < deadline, r.stdout
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=60)
    r = check()
    assert r.returncode == 1 and "UNAVAILABLE" in r.stdout, r.stdout


def test_entrypoint_flags_ports_and_file_layout(variant, stages):
    final = final_stage(stages)
    assert exec_form(final.all("ENTRYPOINT")[-1]) == [f"{BIN_DIR}/brt-server"]
    args = exec_form(final.all("CMD")[-1])
    unknown = set(flag_names(args)) - server_flags()
    assert not unknown, f"brt-server has no flags {unknown}"
    values = flag_values(args)
    exposed = {int(p) for e in final.all("EXPOSE") for p in e.split()}
    grpc_port = int(values["listen"].rsplit(":", 1)[1])
    metrics_port = int(values["metrics_address"].rsplit(":", 1)[1])
    assert metrics_port == default_metrics_port()
    assert {grpc_port, metrics_port, 8080} <= exposed
    assert values["listen"].startswith("0.0.0.0:"), "reachable from outside the container"
    assert "api_keys_file" in values, "listening on 0.0.0.0 needs keys (or --allow_unauthenticated)"
    assert (values.get("device") == "cuda:0") == (variant == "cuda")
    # The server looks for the shim at <exe>/../lib and the model at <exe>/../../model/artifacts.
    dests = {posixpath.basename(src.rstrip("/")): dest.rstrip("/")
             for _, srcs, dest in map(parse_copy, final.all("COPY")) for src in srcs}
    assert dests["brt-server"] == BIN_DIR
    assert dests["libbrt_spm_shim.so"] == posixpath.normpath(BIN_DIR + "/../lib")
    assert dests["artifacts"] == posixpath.normpath(BIN_DIR + "/../../model/artifacts")
    assert "STOPSIGNAL SIGTERM" in [f"{i} {a}" for i, a in final.instructions]


def test_apt_installs_are_lean_and_clean_their_lists(stages):
    for s in stages:
        if any("|" in run for run in s.all("RUN")):
            assert s.all("SHELL") and "pipefail" in s.all("SHELL")[0], \
                f"stage {s.name}: a failed command before a pipe would go unnoticed without pipefail"
        for run in s.all("RUN"):
            if "apt-get" not in run:
                continue
            assert "apt-get upgrade" not in run and "dist-upgrade" not in run
            assert run.index("apt-get update") < run.index("apt-get install"), "update in the same RUN"
            for install in re.findall(r"apt-get install[^&|]*", run):
                assert "-y" in install and "--no-install-recommends" in install, install
            assert run.rstrip().endswith("rm -rf /var/lib/apt/lists/*") or \
                "rm -rf /var/lib/apt/lists/* " in run, f"apt lists left in the layer: {run[:80]}"


def test_stages_install_the_shared_package_lists(variant, stages):
    build_lists, runtime_lists = EXPECTED_LISTS[variant]
    for stage, expected in zip(stages, (build_lists, runtime_lists)):
        installs = [r for r in stage.all("RUN") if "apt-get install" in r]
        read = set(re.findall(r"/tmp/packages/([\w-]+)\.txt", " ".join(installs)))
        assert read == expected, f"stage {stage.name} installs lists {read}, expected {expected}"
        assert any(parse_copy(c)[1:] == (["deploy/packages/"], "/tmp/packages/") for c in stage.all("COPY"))


def test_install_deps_installs_every_list():
    listed = install_deps_packages()
    assert len(listed) == len(set(listed)), "a package twice in install-deps.sh"
    for name in PACKAGE_LISTS:
        missing = set(package_list(name)) - set(listed)
        assert not missing, f"deploy/packages/{name}.txt: {missing} not in install-deps.sh --list"
    assert {"nginx", "yamllint"} <= set(listed)
    r = subprocess.run(["bash", "-n", os.path.join(DEPLOY, "install-deps.sh")])
    assert r.returncode == 0
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", os.path.join(DEPLOY, "install-deps.sh")], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout


# Runtime packages that no binary links: deliberate (the reason is in deploy/packages/*.txt).
NOT_LINKED = {"ca-certificates", "libopenblas0-openmp"}
# In every Debian base image.
BASE_IMAGE = {"libc6", "libstdc++6", "libgcc-s1"}


def owning_packages(paths):
    """{path: Debian package} for the paths dpkg knows (one dpkg-query call: it is slow to start)."""
    out = subprocess.run(["dpkg-query", "-S", *paths], capture_output=True, text=True).stdout
    return {path: pkg.split(":")[0] for pkg, path in (line.split(": ", 1) for line in out.splitlines())}


def test_runtime_packages_are_what_the_binaries_link():
    binaries = [os.path.join(ROOT, "build", p) for p in ("bin/brt-server", "bin/brt", "lib/libbrt_spm_shim.so")]
    if not all(map(os.path.exists, binaries)) or not shutil.which("dpkg-query"):
        pytest.skip("needs the built binaries (deploy/build.sh) and dpkg")
    runtime = set(package_list("runtime")) | set(package_list("torch-runtime"))
    links = []  # (binary, library, resolved path)
    for binary in binaries:
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                            subprocess.run(["readelf", "-d", binary], capture_output=True, text=True).stdout)
        resolved = dict(re.findall(r"^\s*(\S+) => (/\S+)", subprocess.run(
            ["ldd", binary], capture_output=True, text=True).stdout, re.M))
        for lib in needed:
            if not lib.startswith("ld-linux"):
                assert lib in resolved, f"{binary}: {lib} does not resolve"
                links.append((binary, lib, resolved[lib]))
    owners = owning_packages({p for _, _, path in links for p in (path, os.path.realpath(path))})
    used = set()
    for binary, lib, path in links:
        package = owners.get(os.path.realpath(path)) or owners.get(path)
        assert package, f"{path} belongs to no Debian package"
        assert package in runtime | BASE_IMAGE, \
            f"{os.path.basename(binary)} links {lib} from {package}, missing from deploy/packages/runtime.txt"
        used.add(package)
    unused = runtime - used - NOT_LINKED
    assert not unused, f"runtime packages nothing links (drop them or say why in NOT_LINKED): {unused}"


def test_copy_sources_are_tracked_and_in_the_build_context(variant, stages):
    ignore = read_dockerignore(DOCKERFILES[variant] + ".dockerignore")
    for s in stages:
        for args in s.all("COPY"):
            options, sources, _ = parse_copy(args)
            if "from" in options:
                continue
            for src in sources:
                assert os.path.exists(os.path.join(ROOT, src)), f"COPY {src}: not in the repository"
                tracked = git_files(src)
                assert tracked, f"COPY {src}: not tracked by git (a clean clone lacks it)"
                excluded = [f for f in tracked if dockerignored(f, ignore) and "__pycache__" not in f]
                assert not excluded, f"COPY {src}: excluded by the .dockerignore: {excluded[:5]}"
    assert dockerignored("build/bin/brt-server", ignore) and dockerignored(".git/config", ignore)


def build_stage_sources(stages):
    """(source, destination under the work directory) of the build stage's COPYs from the context."""
    build = stages[0]
    out = []
    for args in build.all("COPY"):
        _, sources, dest = parse_copy(args)
        if dest.startswith("/"):
            continue  # package lists, outside the source tree
        out += [(src, dest) for src in sources]
    return out


def test_both_images_build_the_same_sources():
    assert build_stage_sources(parse_dockerfile(DOCKERFILES["cpu"])) == \
        build_stage_sources(parse_dockerfile(DOCKERFILES["cuda"]))


def test_build_stage_sources_suffice_for_cmake(tmp_path):
    """Copies exactly what the build stage copies, then runs CMake's configure step there (seconds; no
    compilation): a source file the build needs but the image lacks fails it. Includes of repository
    files are checked to stay within the copied tree."""
    if not shutil.which("cmake"):
        pytest.skip("needs cmake")
    stages = parse_dockerfile(DOCKERFILES["cpu"])
    ctx = tmp_path / "src"
    for src, dest in build_stage_sources(stages):
        from_path, target = os.path.join(ROOT, src), ctx / dest
        if os.path.isdir(from_path):
            shutil.copytree(from_path, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
            continue
        if dest.endswith("/"):  # COPY FILE DIR/ puts FILE in DIR
            target = target / os.path.basename(src)
        os.makedirs(target.parent, exist_ok=True)
        shutil.copy(from_path, target)
    top_dirs = {d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d))}
    for dirpath, _, names in os.walk(ctx):
        for name in names:
            if not name.endswith((".cc", ".h")):
                continue
            path = os.path.join(dirpath, name)
            for inc in re.findall(r'#include "([^"]+)"', open(path, errors="replace").read()):
                if inc.split("/")[0] in top_dirs:
                    assert (ctx / inc).exists(), f"{os.path.relpath(path, ctx)} includes {inc}, not copied"
    r = subprocess.run(["cmake", "-S", str(ctx), "-B", str(tmp_path / "build"), "-DCMAKE_BUILD_TYPE=Release",
                        "-DBRT_BUILD_TESTS=OFF"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = " ".join(stages[0].all("RUN"))
    assert "bash deploy/build.sh -DBRT_BUILD_TESTS=OFF" in run
