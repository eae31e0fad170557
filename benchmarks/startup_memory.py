#!/usr/bin/env python3
"""brt-server's startup time and resident memory with the memory it touches at startup, against without.

  /usr/bin/python3 benchmarks/startup_memory.py [--rounds 3]

Each round starts brt-server three times, in turn: with --initial_session_slots=8 --checkpoint_prefill_mb=0
(the pools and checkpoint buffers allocated on first use, as before 2026-12-04), with only the checkpoint
buffers (--initial_session_slots=8) and with the defaults (64 session slots and 64 MiB of checkpoint buffers
touched at startup). Prints the time from launch to
SERVING (tests/integration/conftest.BrtServer) and the process's VmRSS once serving.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import rss_bytes  # noqa: E402
from conftest import BrtServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    settings = (("before (8 slots, no prefill)", ["--initial_session_slots=8", "--checkpoint_prefill_mb=0"]),
                ("checkpoint prefill only (8 slots)", ["--initial_session_slots=8"]),
                ("defaults", []))
    print(f"# /usr/bin/python3 benchmarks/startup_memory.py --rounds {args.rounds}; 1-minute load "
          f"{os.getloadavg()[0]:.2f} before", flush=True)
    for r in range(args.rounds):
        for name, flags in (settings if r % 2 == 0 else settings[::-1]):
            t0 = time.time()
            s = BrtServer(*flags)
            ready = time.time() - t0
            rss = rss_bytes(s.proc.pid) >> 20
            s.stop()
            print(f"{name}: ready in {ready:.2f} s, RSS {rss} MiB", flush=True)
    print(f"# 1-minute load {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
