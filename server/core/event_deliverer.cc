#include "server/core/event_deliverer.h"

#include <utility>

#include "server/thread_name.h"

namespace brt {

EventDeliverer::EventDeliverer(size_t inline_below)
    : inline_below_(inline_below), thread_([this] { Loop(); }) {}

EventDeliverer::~EventDeliverer() {
  Join();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void EventDeliverer::Start(Events events) {
  Join();
  if (events.empty()) return;
  if (events.size() < inline_below_) {
    for (auto& e : events) e();
    return;
  }
  absl::MutexLock lock(&mu_);
  batch_ = std::move(events);
  pending_ = true;
}

void EventDeliverer::Join() {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pending_; };
  mu_.Await(absl::Condition(&done));
}

void EventDeliverer::Loop() {
  NameThisThread("brt-deliver");
  while (true) {
    Events batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || pending_; };
      mu_.Await(absl::Condition(&ready));
      if (!pending_) return;  // stopping, nothing left
      batch = std::move(batch_);
      batch_.clear();
    }
    for (auto& e : batch) e();
    batch.clear();  // the callbacks' captures go before the batch counts as done
    absl::MutexLock lock(&mu_);
    pending_ = false;
  }
}

}  // namespace brt
