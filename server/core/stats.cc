#include "server/core/stats.h"

#include <algorithm>

namespace brt {

void ExecutorStats::Record(BatchStats* s, uint32_t batch, uint64_t tokens) {
  s->calls++;
  s->tokens += tokens;
  s->max_batch = std::max(s->max_batch, batch);
  size_t i = 0;
  while (kBatchBuckets[i] != 0 && batch > kBatchBuckets[i]) ++i;
  s->histogram[i]++;
}

void ExecutorStats::RecordScore(uint32_t batch, uint64_t tokens) {
  absl::MutexLock lock(&mu_);
  Record(&stats_.score, batch, tokens);
}

void ExecutorStats::RecordDecode(uint32_t batch) {
  absl::MutexLock lock(&mu_);
  Record(&stats_.decode, batch, batch);
}

void ExecutorStats::RecordSpan(uint32_t batch, uint64_t tokens) {
  absl::MutexLock lock(&mu_);
  Record(&stats_.span, batch, tokens);
}

StatsSnapshot ExecutorStats::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace brt
