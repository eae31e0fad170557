// ExecutorStats: counters of batched model calls and histograms of their batch sizes. Integration
// tests read them (through GetServerInfo) to check that batching happened.
//
// Thread safety: all methods are safe to call concurrently.
#ifndef BRT_SERVER_CORE_STATS_H_
#define BRT_SERVER_CORE_STATS_H_

#include <array>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace brt {

// Bucket upper bounds (inclusive); the last bucket (le = 0) is "above 64".
inline constexpr std::array<uint32_t, 8> kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 0};

struct BatchStats {
  uint64_t calls = 0;
  uint64_t tokens = 0;
  uint32_t max_batch = 0;
  std::array<uint64_t, kBatchBuckets.size()> histogram{};
};

struct StatsSnapshot {
  BatchStats score;
  BatchStats decode;
  BatchStats span;
};

class ExecutorStats {
 public:
  void RecordScore(uint32_t batch, uint64_t tokens);
  void RecordDecode(uint32_t batch);
  void RecordSpan(uint32_t batch, uint64_t tokens);
  StatsSnapshot Snapshot() const;

 private:
  static void Record(BatchStats* s, uint32_t batch, uint64_t tokens);
  mutable absl::Mutex mu_;
  StatsSnapshot stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_STATS_H_
