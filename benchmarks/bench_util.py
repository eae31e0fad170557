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
