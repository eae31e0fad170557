#include "server/http/warm_first_pool.h"

#include <algorithm>
#include <utility>

namespace brt::http {

WarmFirstPool::WarmFirstPool(int threads) {
  const int n = std::max(threads, 1);
  for (int i = 0; i < n; ++i) workers_.push_back(std::make_unique<Worker>());
  for (int i = 0; i < n; ++i) threads_.emplace_back([this, w = workers_[i].get()] { Loop(w); });
}

WarmFirstPool::~WarmFirstPool() { shutdown(); }

void WarmFirstPool::enqueue(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  if (!idle_.empty()) {
    Worker* w = idle_.back();  // the warmest idle worker
    idle_.pop_back();
    w->job = std::move(fn);
    w->wake.Signal();
    return;
  }
  queue_.push_back(std::move(fn));
}

void WarmFirstPool::shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (const auto& w : workers_) w->wake.Signal();
  }
  for (std::thread& t : threads_) t.join();
}

void WarmFirstPool::Loop(Worker* self) {
  while (true) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      if (!queue_.empty()) {  // connections that found every worker busy come first
        job = std::move(queue_.front());
        queue_.pop_front();
      } else {
        if (stopping_) return;
        idle_.push_back(self);
        while (!self->job && !stopping_) self->wake.Wait(&mu_);
        if (self->job) {
          job = std::move(self->job);
          self->job = nullptr;
        } else {  // stopping, with nothing handed over: leave the idle list
          idle_.erase(std::find(idle_.begin(), idle_.end(), self));
          continue;  // runs what is still queued, then returns
        }
      }
    }
    job();
  }
}

}  // namespace brt::http
