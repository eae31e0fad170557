#include "server/model/pool_grower.h"

#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <c10/core/InferenceMode.h>

namespace brt {

PoolGrower::PoolGrower(std::vector<std::vector<int64_t>> shapes, at::ScalarType dtype)
    : shapes_(std::move(shapes)), dtype_(dtype) {}

PoolGrower::~PoolGrower() { JoinWorker(); }

void PoolGrower::JoinWorker() {
  if (worker_.joinable()) worker_.join();
}

void PoolGrower::Prepare(int64_t slots) {
  absl::MutexLock join(&join_mu_);
  {
    absl::MutexLock lock(&mu_);
    // Ready or under way; or another size under way (the pools grew past what was asked): the next call
    // asks again once it is done, so the executor never waits here.
    if (asked_ == slots || running_) return;
  }
  JoinWorker();  // finished
  {
    absl::MutexLock lock(&mu_);
    asked_ = slots;
    running_ = true;
    ready_.clear();
  }
  worker_ = std::thread([this, slots] {
    std::vector<at::Tensor> made;
    try {
      made = Allocate(slots);
    } catch (const std::exception&) {
      made.clear();  // out of memory: Take hands over nothing and the runner allocates (and reports) itself
    }
    absl::MutexLock lock(&mu_);
    running_ = false;
    if (asked_ == slots) ready_ = std::move(made);
  });
}

std::vector<at::Tensor> PoolGrower::Take(int64_t slots) {
  absl::MutexLock join(&join_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (asked_ != slots) {
      if (!running_) {
        ready_.clear();
        asked_ = 0;
      }
      return {};
    }
  }
  JoinWorker();  // the set under way is the one wanted: what is left of its allocation is less than anew
  absl::MutexLock lock(&mu_);
  std::vector<at::Tensor> out = std::move(ready_);
  ready_.clear();
  asked_ = 0;
  return out;
}

int64_t PoolGrower::ready_slots() const {
  absl::MutexLock lock(&mu_);
  return running_ || ready_.empty() ? 0 : asked_;
}

int64_t PoolGrower::asked_slots() const {
  absl::MutexLock lock(&mu_);
  return asked_;
}

at::Tensor TouchedCpuZeros(const std::vector<int64_t>& dims, at::ScalarType dtype) {
  at::Tensor t = at::empty(dims, at::TensorOptions().dtype(dtype));
  char* begin = static_cast<char*>(t.data_ptr());
  const size_t bytes = t.nbytes();
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  // The whole pages inside the tensor, mapped in one call (Linux 5.14+; a no-op error before): on the
  // project's VM this halved the time to touch 54 MB (145 -> ~80 ms with the memset below).
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
  const uintptr_t last = (reinterpret_cast<uintptr_t>(begin) + bytes) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE);
#endif
  // A plain memset, not at::zeros: ATen's fill runs an OpenMP region whose workers then spin for
  // milliseconds on the cores the decode steps use (model_runner.cc, InitSlots).
  std::memset(begin, 0, bytes);
  return t;
}

std::vector<at::Tensor> PoolGrower::Allocate(int64_t slots) const {
  c10::InferenceMode guard;  // as the pools the executor allocates itself
  std::vector<at::Tensor> out;
  out.reserve(shapes_.size());
  for (const auto& shape : shapes_) {
    std::vector<int64_t> dims = shape;
    dims.insert(dims.begin(), slots);
    out.push_back(TouchedCpuZeros(dims, dtype_));
  }
  return out;
}

}  // namespace brt
