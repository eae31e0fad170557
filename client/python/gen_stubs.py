#!/usr/bin/env python3
"""Regenerates the brt.v1 Python stubs shipped in brt_client/_proto from proto/brt/v1/brt.proto.

Run from anywhere after changing the proto:  /usr/bin/python3 client/python/gen_stubs.py
(needs protoc and grpc_python_plugin: Debian packages protobuf-compiler, protobuf-compiler-grpc).

The proto is compiled as "brt.proto" with -I proto/brt/v1, the same way tests/integration/conftest.py
compiles it, so both register the same file in protobuf's descriptor pool and can share a process.
The gRPC module's absolute import of brt_pb2 is rewritten to a relative one (a package-local copy).
A test (tests/integration/test_clients.py) regenerates into a temporary folder and compares.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROTO_DIR = os.path.join(ROOT, "proto", "brt", "v1")
OUT_DIR = os.path.join(HERE, "brt_client", "_proto")
FILES = ("brt_pb2.py", "brt_pb2_grpc.py")


def generate(out_dir):
    """Writes brt_pb2.py and brt_pb2_grpc.py into out_dir."""
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    with tempfile.TemporaryDirectory(prefix="brt-gen-") as tmp:
        subprocess.run(["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--grpc_out={tmp}",
                        f"--plugin=protoc-gen-grpc={plugin}", os.path.join(PROTO_DIR, "brt.proto")],
                       check=True)
        for name in FILES:
            with open(os.path.join(tmp, name), encoding="utf-8") as f:
                text = f.read()
            text = text.replace("\nimport brt_pb2 as brt__pb2\n", "\nfrom . import brt_pb2 as brt__pb2\n")
            with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
                f.write(text)


if __name__ == "__main__":
    generate(OUT_DIR)
    print(f"wrote {', '.join(FILES)} to {OUT_DIR}", file=sys.stderr)
