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


def use_server_allocator():
    """Sets this process's glibc malloc as brt-server sets its own at start (server/main.cc: large blocks
    stay in the heap instead of an mmap/munmap per allocation). Without it a model in a Python process
    page-faults its per-call temporaries afresh (a 16-row decode step: 9.6 ms against 4.7 ms), so an
    in-process figure compared with the server's must run under the same setting. Through mallopt, in this
    process only: the environment, and so the server this script starts, is left as it is."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    ok = libc.mallopt(m_mmap_threshold, 256 << 20) == 1 and libc.mallopt(m_trim_threshold, 256 << 20) == 1
    if not ok:
        raise RuntimeError("mallopt refused the server's malloc settings")


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


class omp_threads:
    """Sets this thread's OpenMP thread count (ATen's intra-op ops) for a block and restores it. brt-server
    runs packed (XNNPACK) products with one OpenMP thread beside XNNPACK's pool of --threads; a bare model
    that was packed (pack_cpu) is timed the same way, and everything else (the roofline, the eager
    reference, the full-attention baseline) runs with --threads OpenMP threads."""

    def __init__(self, n):
        import ctypes
        self.lib = ctypes.CDLL("libgomp.so.1")
        self.n = n

    def __enter__(self):
        import torch
        self.saved = torch.get_num_threads()
        self.lib.omp_set_num_threads(self.n)

    def __exit__(self, *exc):
        self.lib.omp_set_num_threads(self.saved)


def packing_pays_off():
    """brt-server's --cpu_packed_weights=auto (ModelRunner::PackedWeightsPayOff): pack unless this is an x86-64
    CPU without AVX-512F."""
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        return True
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and " avx512f" in line for line in f)


def pack_like_server(module):
    """Packs a loaded export's products as brt-server does by default (--cpu_packed_weights=auto): for XNNPACK
    where that pays off, else with the weights transposed once for OpenBLAS (pack_cpu_transposed) where the
    export has it. Returns whether XNNPACK packing happened (an export without pack_cpu, a non-CPU/float32
    module, or a CPU where packing does not pay off is not XNNPACK-packed)."""
    if packing_pays_off():
        return bool(hasattr(module, "pack_cpu") and module.pack_cpu())
    if hasattr(module, "pack_cpu_transposed"):
        module.pack_cpu_transposed()
    return False


# The export's methods brt-server calls after loading (server/model/model_runner.cc, ModelRunner::Impl::Freeze).
SERVER_METHODS = ("init_slots", "copy_slots", "score_slots", "decode_slots", "decode_range", "finish_slots",
                  "finish_range", "span_slots", "mixed_slots")


def freeze_like_server(module, xnnpack_packed):
    """The loaded (and packed) export frozen as brt-server freezes it by default (--freeze_model): LibTorch's
    freeze_module keeping the methods the server calls, calls inlined and weights as constants, without the
    extra graph rewrites of torch.jit.freeze (the same operations, so the same bits). An export packed for
    XNNPACK (pack_like_server returned True) is returned as it is: its packed products cannot be frozen, and
    the server runs it unfrozen too."""
    import torch
    if xnnpack_packed:
        return module
    keep = [name for name in SERVER_METHODS if module._c._has_method(name)]
    optimize = torch._C._get_graph_executor_optimize()
    torch._C._set_graph_executor_optimize(True)  # inlining takes each callee's inlined graph only then
    try:
        frozen = torch.jit.RecursiveScriptModule(torch._C._freeze_module(module._c, keep))
        torch.jit.RecursiveScriptModule._finalize_scriptmodule(frozen)
        return frozen
    finally:
        torch._C._set_graph_executor_optimize(optimize)
