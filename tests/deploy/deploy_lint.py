"""Small readers shared by the deploy tests: a Dockerfile parser, .dockerignore matching, the package
lists, the server's flag names and defaults. No third-party linters exist for Dockerfiles on Debian 12,
so tests/deploy checks the properties that matter here itself."""
import glob
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
PACKAGE_LISTS = ("build", "torch-build", "runtime", "torch-runtime")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction):
        return [args for instr, args in self.instructions if instr == instruction]


def parse_dockerfile(path):
    """Stages of a Dockerfile: continuation lines joined, comments dropped."""
    lines, buf = [], ""
    with open(path) as f:
        for raw in f:
            s = raw.strip()
            if not s or s.startswith("#"):
                continue
            if s.endswith("\\"):
                buf += s[:-1] + " "
                continue
            lines.append(buf + s)
            buf = ""
    assert not buf, f"{path}: continuation at the end of the file"
    stages = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr, args = instr.upper(), args.strip()
        if instr == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name, words[0]))
        else:
            assert stages, f"{path}: {instr} before FROM"
            stages[-1].instructions.append((instr, args))
    return stages


def exec_form(args):
    """['a', 'b'] of an exec-form argument (CMD, ENTRYPOINT, HEALTHCHECK CMD)."""
    assert args.startswith("["), f"not exec form: {args}"
    return json.loads(args)


def parse_copy(args):
    """(options, sources, destination) of a COPY instruction in shell form."""
    words = shlex.split(args)
    options = {w.split("=", 1)[0][2:]: w.split("=", 1)[1] for w in words if w.startswith("--")}
    paths = [w for w in words if not w.startswith("--")]
    return options, paths[:-1], paths[-1]


def _glob_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def read_dockerignore(path):
    with open(path) as f:
        return [s for s in (line.strip() for line in f) if s and not s.startswith("#")]


def dockerignored(relpath, patterns):
    """Docker's rule: the last pattern that matches the path or one of its parent directories decides."""
    parts = relpath.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def package_list(name):
    """Names in deploy/packages/NAME.txt, read the way install-deps.sh and the Dockerfiles read them."""
    with open(os.path.join(DEPLOY, "packages", f"{name}.txt")) as f:
        return [w for line in f for w in line.split("#", 1)[0].split()]


def install_deps_packages():
    out = subprocess.run(["bash", os.path.join(DEPLOY, "install-deps.sh"), "--list"], check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def git_files(relpath):
    """Tracked files at or under relpath (a clean clone has only these)."""
    out = subprocess.run(["git", "ls-files", "--", relpath], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return out.split()


def server_flags():
    """Names of the flags brt-server defines (ABSL_FLAG in server/)."""
    names = set()
    for path in glob.glob(os.path.join(ROOT, "server", "**", "*.cc"), recursive=True):
        with open(path) as f:
            names.update(re.findall(r"ABSL_FLAG\(\s*[\w:<>]+\s*,\s*(\w+)\s*,", f.read()))
    return names


def flag_names(args):
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--")]


def flag_values(args):
    return {a[2:].split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--") and "=" in a}


def default_metrics_port():
    with open(os.path.join(ROOT, "server", "metrics", "metrics_exposer.h")) as f:
        address = re.search(r'kDefaultMetricsAddress\[\]\s*=\s*"([^"]+)"', f.read()).group(1)
    return int(address.rsplit(":", 1)[1])
