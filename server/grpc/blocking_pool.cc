#include "server/grpc/blocking_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace brt {

BlockingPool::BlockingPool(int threads, size_t max_queue) : max_queue_(std::max<size_t>(max_queue, 1)) {
  for (int i = 0; i < std::max(threads, 1); ++i) threads_.emplace_back([this] { Loop(); });
}

BlockingPool::~BlockingPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

bool BlockingPool::TrySubmit(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= max_queue_) return false;
  queue_.push_back(std::move(work));
  return true;
}

void BlockingPool::WaitIdle() {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && running_ == 0; };
  mu_.Await(absl::Condition(&idle));
}

absl::Status BlockingPool::FullError() const {
  return absl::UnavailableError(absl::StrCat(max_queue_, " calls already wait for the server's ",
                                             threads_.size(),
                                             " blocking-pool threads (--blocking_queue); retry later"));
}

void BlockingPool::Loop() {
  while (true) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and everything queued has run
      work = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    work();
    work = nullptr;  // its captures are released before the pool counts it done
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

}  // namespace brt
