// PoolGrower: allocates the next, larger set of session memory pools on a background thread, before the
// executor needs them, so that growing the pools costs the executor a copy of the old rows into memory
// already touched instead of the first touch of every new page.
//
// Why: the pools double when a session takes a slot beyond their capacity (ModelRunner::Impl::Reserve), on
// the executor, between two model calls, so every running session waits for it. On this project's VM a
// fresh page costs ~14 us to touch: doubling from 32 to 64 slots of the shipped model (54 MB) stalled every
// generating session ~155 ms, and each doubling after that stalls twice as long (benchmarks/README.md,
// "pool growth"). The copy of the old rows into touched memory is ~10 GB/s.
//
// Contract: Prepare(slots) starts allocating, zero-filled (every page touched), one tensor per pool shape
// with a leading dimension of `slots`, unless a set of that size is ready or under way; it returns at
// once. Take(slots) hands over a set of exactly `slots` slots: the ready one, or the one under way once it
// is done (waiting for it is never slower than allocating anew, which it has started); empty when none of
// that size was asked for. A set of another size is dropped by the next Prepare or Take. CPU tensors only
// (on a GPU a new pool is a device allocation and a fill, not page faults: the runner does not use this).
// Memory: while a set waits, the process holds it beside the pools it will replace (what growth needs
// anyway a little later).
//
// Thread safety: thread-safe; the allocation runs on one thread of its own, which the destructor joins.
#ifndef BRT_SERVER_MODEL_POOL_GROWER_H_
#define BRT_SERVER_MODEL_POOL_GROWER_H_

#include <cstdint>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace brt {

// A CPU tensor of `dims`, zero-filled, every page touched: without an OpenMP region (at::zeros runs one,
// whose workers then spin on the decode steps' cores) and, on Linux, with the pages mapped in one call
// before the fill.
at::Tensor TouchedCpuZeros(const std::vector<int64_t>& dims, at::ScalarType dtype);

class PoolGrower {
 public:
  // One pool per entry of `shapes`: its dimensions after the leading slot dimension.
  PoolGrower(std::vector<std::vector<int64_t>> shapes, at::ScalarType dtype);
  ~PoolGrower();
  PoolGrower(const PoolGrower&) = delete;
  PoolGrower& operator=(const PoolGrower&) = delete;

  void Prepare(int64_t slots);
  std::vector<at::Tensor> Take(int64_t slots);

  // Slots of the set that is ready (0 when none is), and of the set asked for last (ready or under way; 0
  // when none). For tests and diagnostics.
  int64_t ready_slots() const;
  int64_t asked_slots() const;

 private:
  // The background thread's work: one zero-filled tensor per shape.
  std::vector<at::Tensor> Allocate(int64_t slots) const;
  // Joins a finished or running worker (mu_ not held).
  void JoinWorker();

  const std::vector<std::vector<int64_t>> shapes_;
  const at::ScalarType dtype_;
  mutable absl::Mutex mu_;
  int64_t asked_ ABSL_GUARDED_BY(mu_) = 0;  // slots of the set under way or ready; 0 = none
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<at::Tensor> ready_ ABSL_GUARDED_BY(mu_);
  std::thread worker_;  // touched only by callers of Prepare/Take, under join_mu_
  absl::Mutex join_mu_;
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_POOL_GROWER_H_
