#include "server/model/shard_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/model/cpu_affinity.h"
#include "server/thread_name.h"

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

ShardPool::ShardPool(int threads, std::function<void()> init, const std::string& name, std::vector<int> cpus) {
  workers_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    const int cpu = cpus.empty() ? -1 : cpus[static_cast<size_t>(i) % cpus.size()];
    workers_.emplace_back([this, i, name, cpu, init] { Loop(i, name, cpu, init); });
  }
  absl::MutexLock lock(&mu_);
  auto all = [this, threads]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return initialised_ == threads; };
  mu_.Await(absl::Condition(&all));
  if (!cpus.empty() && pin_failures_ == 0) {
    for (int i = 0; i < threads; ++i) pinned_cpus_.push_back(cpus[static_cast<size_t>(i) % cpus.size()]);
  }
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

void ShardPool::Loop(int index, const std::string& name, int cpu, const std::function<void()>& init) {
  NameThisThread(absl::StrCat(name, "-", index));
  const bool pin_failed = cpu >= 0 && !PinThisThread(cpu);
  init();
  {
    absl::MutexLock lock(&mu_);
    ++initialised_;
    if (pin_failed) ++pin_failures_;
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
