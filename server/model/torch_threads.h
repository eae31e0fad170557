// How the model runner's threads set LibTorch's thread counts.
//
// Three kinds of worker run a model call's operations on CPU: OpenMP threads (ATen's intra-op operations,
// and OpenBLAS, Debian's OpenMP build), LibTorch's one process-wide pthreadpool (XNNPACK's products, used
// with packed weights), and the runner's own row-shard threads (shard_pool.h).
//
// Thread safety: each function acts on the calling thread only, except SetIntraOpThreads, which also
// resizes the process-wide pthreadpool (recreating it): it must not run while another thread is in an
// XNNPACK call that uses the pool.
#pragma once

namespace brt {

// The calling thread's OpenMP thread count and the pthreadpool's size, both n. OpenMP keeps the count per
// thread, and ATen sets a thread's count lazily, on its first parallel operation, to the count that any
// thread set last: so a thread that had not run one yet could later switch itself to another thread's
// count (seen: the executor and the shard workers each set theirs, and one ran at the other's). Doing
// the lazy step first makes the count stick.
void SetIntraOpThreads(int n);

// The calling thread's OpenMP thread count only, through the OpenMP runtime LibTorch itself uses (looked
// up in the process rather than linked: Debian's libgomp, or the renamed copy a pip wheel carries), so the
// process keeps a single runtime. No-op if the process has none.
void SetOpenMpThreads(int n);

// XNNPACK (and QNNPACK) calls made on the calling thread from now on run on it alone, not on the shared
// pthreadpool, which serialises its callers.
void RunPoolOpsOnThisThread();

}  // namespace brt
