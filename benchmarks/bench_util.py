"""Helpers shared by the benchmark scripts: the quiet-machine guard, process memory, text chunking."""
import os
import sys

CHUNK = 16384
LOAD_LIMIT = 0.7


def check_load(force, limit=LOAD_LIMIT):
    """Exits 2 when the 1-minute load average is above `limit` (a busy machine gives wrong figures)."""
    load = os.getloadavg()
    if load[0] > limit and not force:
        print(f"refusing to start: 1-minute load average {load[0]:.2f} > {limit} (the machine is busy; "
              f"wait, or pass --force and treat the numbers as noisy)", file=sys.stderr)
        sys.exit(2)
    return load


# What brt-server sets with mallopt at its start (server/main.cc): glibc keeps large blocks in the heap
# instead of mmap/munmap per allocation. Without it a model in a Python process page-faults its per-call
# temporaries afresh (a 16-row decode step: 9.6 ms against 4.7 ms), so an in-process figure compared with
# the server's must run under the same setting.
SERVER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def use_server_allocator():
    """Re-executes this script with SERVER_MALLOC in the environment unless it is there (glibc reads it at
    start). Call first in main(), before torch is imported; the server it starts inherits it harmlessly."""
    if all(os.environ.get(k) == v for k, v in SERVER_MALLOC.items()):
        return
    env = dict(os.environ, **SERVER_MALLOC)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def rss_bytes(pid):
    """Resident memory of a process (VmRSS), bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def chunks_of(data, n=CHUNK):
    return [data[i:i + n] for i in range(0, len(data), n)]


def percentile(values, q):
    """q-th percentile (0..100) with linear interpolation between the order statistics."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
