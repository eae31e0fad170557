// CheckpointRecycler: hands out checkpoints whose host buffers come from checkpoints that were dropped
// (evicted from a session's log, or let go with a deleted session), so a new checkpoint copies a slot
// into memory the process already touched instead of fresh pages.
//
// Why: a checkpoint holds a session's whole memory (1.2 MB for the shipped model). On this project's VM
// a fresh page's first touch costs ~10 us, so an export into new memory took 3.4 ms and into reused
// memory ~0.15 ms; glibc gave part of a deleted session's checkpoints back to the kernel (a thread
// arena's spare heap is unmapped once empty), so the next sessions paid the first touch again.
//
// Contract: NewCheckpoint() returns an empty Checkpoint whose `memory` may hold a dropped checkpoint's
// buffers (contents unspecified: the caller overwrites them through ModelBackend::ExportSlotInto).
// When the last reference to it goes, its buffers return here while the kept ones stay within
// `max_kept_bytes` (their capacity); beyond that they are freed. Each returned checkpoint keeps the
// recycler alive. Memory: at most max_kept_bytes of dropped checkpoints' (or Prefill's) buffers, on top
// of the live checkpoints'.
//
// Thread safety: thread-safe (one mutex); checkpoints may be dropped on any thread.
#ifndef BRT_SERVER_CORE_CHECKPOINT_RECYCLER_H_
#define BRT_SERVER_CORE_CHECKPOINT_RECYCLER_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/core/checkpoint_log.h"

namespace brt {

class CheckpointRecycler : public std::enable_shared_from_this<CheckpointRecycler> {
 public:
  static std::shared_ptr<CheckpointRecycler> Create(size_t max_kept_bytes);

  std::shared_ptr<Checkpoint> NewCheckpoint();
  // Adds buffer sets of kv_bytes + state_bytes, every page touched, while the kept bytes stay within
  // `bytes` and max_kept_bytes: the first checkpoints of new sessions then need no fresh pages (on this
  // project's VM a fresh page costs ~14 us, a 1.2 MB checkpoint ~3 ms). Returns the sets added.
  size_t Prefill(size_t bytes, size_t kv_bytes, size_t state_bytes);
  // Buffer sets waiting to be reused, and their bytes.
  size_t kept() const;
  size_t kept_bytes() const;

 private:
  explicit CheckpointRecycler(size_t max_kept_bytes) : max_kept_bytes_(max_kept_bytes) {}
  void Give(HostMemory memory);
  static size_t Bytes(const HostMemory& m) { return m.kv.data.capacity() + m.state.data.capacity(); }

  const size_t max_kept_bytes_;
  mutable absl::Mutex mu_;
  std::vector<HostMemory> kept_ ABSL_GUARDED_BY(mu_);
  size_t kept_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_CHECKPOINT_RECYCLER_H_
