"""Real third-party services for end-to-end tests, each on a free loopback port: redis-server and nginx (Debian's
packages; a missing one fails the test, it is not skipped)."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

from conftest import ROOT, free_port


class RedisServer:
    """A throwaway redis-server (no persistence)."""

    def __init__(self):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not installed (deploy/install-deps.sh installs it)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="brt-redis-")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while not self.ping():
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                return c.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def url(self, prefix="brt-test:"):
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Nginx:
    """Debian's nginx with deploy/nginx/brt-replicas.conf.template in front of `backends` (host:port list)."""

    def __init__(self, backends):
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(exe):
            raise RuntimeError("nginx not installed (deploy/install-deps.sh installs it)")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.prefix = tempfile.mkdtemp(prefix="brt-nginx-")
        with open(os.path.join(ROOT, "deploy", "nginx", "brt-replicas.conf.template")) as f:
            conf = f.read()
        servers = "\n        ".join(f"server {b} max_fails=1 fail_timeout=5s;" for b in backends)
        conf = conf.replace("@PREFIX@", self.prefix).replace("@LISTEN@", self.address).replace("@SERVERS@", servers)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        check = subprocess.run([exe, "-t", "-p", self.prefix, "-c", self.conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        self.proc = subprocess.Popen([exe, "-p", self.prefix, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"nginx did not start: {self.error_log()}")
                time.sleep(0.1)

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def access_log(self):
        try:
            with open(os.path.join(self.prefix, "access.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
