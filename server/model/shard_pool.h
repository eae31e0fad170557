// ShardPool: a fixed set of worker threads that run the shards of one batched model call at once.
//
// Why: on a small CPU a decode step (and a block of a few rows) is many small tensor operations. Giving
// each operation two OpenMP threads pays a wake-up and a join per operation, which cost more than they
// save (measured on 2 cores: one intra-op thread decodes 32 rows at ~9 ms a step, two at ~7 ms, and the
// server with two spent a quarter of its time in futex wake-ups). Splitting the rows of the call into
// shards, one per worker, each worker with one intra-op thread, keeps every core busy on whole
// operations. Rows are independent in every batched method of the export, and the shards touch
// disjoint slots of the shared pools, so they may run at the same time.
//
// Each worker runs `init` once, first (per-thread runtime setup: LibTorch's intra-op thread count and
// executor options are thread-local), and keeps that setup for its life: no thread ever switches its
// thread count between calls (see ModelRunnerOptions::decode_threads for why that matters). Before its
// init a worker names itself and, when given CPUs, pins itself to its own (cpu_affinity.h says why).
//
// Thread safety: Run may be called from one thread at a time (the executor); the destructor joins the
// workers and must not run concurrently with Run.
#ifndef BRT_SERVER_MODEL_SHARD_POOL_H_
#define BRT_SERVER_MODEL_SHARD_POOL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace brt {

// Where k shards of rows [0, cost.size()) begin and end (k+1 ascending bounds, first 0, last n): contiguous
// ranges whose summed costs are as even as the rows allow (each boundary where the running cost first
// reaches i/k of the total), every shard at least one row when n >= k. A decode step's rows that complete a
// block also run the state update, several times a token's work: with uniform ranges the shard holding
// such a row kept the other waiting. Pure; k >= 1.
std::vector<int64_t> ShardBounds(const std::vector<double>& cost, int64_t k);

class ShardPool {
 public:
  // Starts `threads` (>= 1) workers, each of which runs `init` once before its first job; returns after
  // every worker's `init` has run (it may change process-wide LibTorch settings). Worker i is named
  // "<name>-<i>" and, when cpus is not empty, pinned to cpus[i % cpus.size()] first.
  ShardPool(int threads, std::function<void()> init, const std::string& name = "brt-worker",
            std::vector<int> cpus = {});
  ~ShardPool();
  ShardPool(const ShardPool&) = delete;
  ShardPool& operator=(const ShardPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()); }
  // The CPU each worker is pinned to; empty when none was asked for or any worker's pinning failed (the
  // OS refused: that worker runs where the scheduler puts it).
  const std::vector<int>& pinned_cpus() const { return pinned_cpus_; }

  // Runs jobs[i] on worker i, all at once, and returns when every job has returned.
  // REQUIRES: 1 <= jobs.size() <= threads(); jobs do not throw.
  void Run(const std::vector<std::function<void()>>& jobs) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop(int index, const std::string& name, int cpu, const std::function<void()>& init)
      ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by each Run
  const std::vector<std::function<void()>>* jobs_ ABSL_GUARDED_BY(mu_) = nullptr;
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // jobs of the current Run not finished yet
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int initialised_ ABSL_GUARDED_BY(mu_) = 0;  // workers whose init has run
  int pin_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> pinned_cpus_;  // set by the constructor
  std::vector<std::thread> workers_;
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_SHARD_POOL_H_
