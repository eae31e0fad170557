#include "server/core/checkpoint_recycler.h"

#include <algorithm>
#include <utility>

namespace brt {

std::shared_ptr<CheckpointRecycler> CheckpointRecycler::Create(size_t max_kept_bytes) {
  return std::shared_ptr<CheckpointRecycler>(new CheckpointRecycler(max_kept_bytes));
}

std::shared_ptr<Checkpoint> CheckpointRecycler::NewCheckpoint() {
  auto* c = new Checkpoint();
  {
    absl::MutexLock lock(&mu_);
    if (!kept_.empty()) {
      kept_bytes_ -= Bytes(kept_.back());
      c->memory = std::move(kept_.back());
      kept_.pop_back();
    }
  }
  std::shared_ptr<CheckpointRecycler> self = shared_from_this();
  return std::shared_ptr<Checkpoint>(c, [self](Checkpoint* dropped) {
    self->Give(std::move(dropped->memory));
    delete dropped;
  });
}

size_t CheckpointRecycler::Prefill(size_t bytes, size_t kv_bytes, size_t state_bytes) {
  const size_t set = kv_bytes + state_bytes;
  if (set == 0) return 0;
  size_t added = 0;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (kept_bytes_ + set > std::min(bytes, max_kept_bytes_)) return added;
    }
    HostMemory m;
    m.kv.data.assign(kv_bytes, '\0');  // written: every page is touched now, not by the first checkpoint
    m.state.data.assign(state_bytes, '\0');
    absl::MutexLock lock(&mu_);
    kept_bytes_ += Bytes(m);
    kept_.push_back(std::move(m));
    ++added;
  }
}

size_t CheckpointRecycler::kept() const {
  absl::MutexLock lock(&mu_);
  return kept_.size();
}

size_t CheckpointRecycler::kept_bytes() const {
  absl::MutexLock lock(&mu_);
  return kept_bytes_;
}

void CheckpointRecycler::Give(HostMemory memory) {
  if (memory.kv.data.empty() && memory.state.data.empty()) return;  // never filled: nothing to reuse
  const size_t bytes = Bytes(memory);
  absl::MutexLock lock(&mu_);
  if (kept_bytes_ + bytes > max_kept_bytes_) return;  // freed
  kept_bytes_ += bytes;
  kept_.push_back(std::move(memory));
}

}  // namespace brt
