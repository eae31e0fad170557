#include "server/model/shard_pool.h"

#include <algorithm>

namespace brt {

std::vector<int64_t> ShardBounds(const std::vector<double>& cost, int64_t k) {
  const int64_t n = static_cast<int64_t>(cost.size());
  k = std::max<int64_t>(1, std::min(k, std::max<int64_t>(n, 1)));
  double total = 0;
  for (double c : cost) total += c;
  std::vector<int64_t> bounds{0};
  double run = 0;
  int64_t row = 0;
  for (int64_t i = 1; i < k; ++i) {
    // Leave at least one row for each later shard; take at least one row for this one.
    const int64_t lo = bounds.back() + 1, hi = n - (k - i);
    while (row < lo || (row < hi && run + cost[static_cast<size_t>(row)] / 2 < total * i / k)) {
      run += cost[static_cast<size_t>(row)];
      ++row;
    }
    bounds.push_back(row);
  }
  bounds.push_back(n);
  return bounds;
}

ShardPool::ShardPool(int threads, std::function<void()> init) {
  workers_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    workers_.emplace_back([this, i, init] { Loop(i, init); });
  }
  absl::MutexLock lock(&mu_);
  auto all = [this, threads]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return initialised_ == threads; };
  mu_.Await(absl::Condition(&all));
}

ShardPool::~ShardPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& t : workers_) t.join();
}

void ShardPool::Run(const std::vector<std::function<void()>>& jobs) {
  absl::MutexLock lock(&mu_);
  jobs_ = &jobs;
  running_ = static_cast<int>(jobs.size());
  ++generation_;
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  mu_.Await(absl::Condition(&done));
  jobs_ = nullptr;
}

void ShardPool::Loop(int index, const std::function<void()>& init) {
  init();
  {
    absl::MutexLock lock(&mu_);
    ++initialised_;
  }
  uint64_t seen = 0;
  while (true) {
    const std::function<void()>* job = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this, &seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || generation_ != seen;
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      seen = generation_;
      // jobs_ is null when the Run this worker woke for had no job for it and has already returned.
      if (jobs_ != nullptr && index < static_cast<int>(jobs_->size())) {
        job = &(*jobs_)[static_cast<size_t>(index)];
      }
    }
    if (job == nullptr) continue;  // this Run has fewer jobs than workers
    (*job)();
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

}  // namespace brt
