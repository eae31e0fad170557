// EventDeliverer: runs a batch of sink callbacks (tokens, replies, call ends) on its own thread while the
// executor goes on to the next model call, so that handing every session's token to its stream overlaps
// the step instead of lengthening it (through gRPC, 32 sessions' tokens took ~1.1 ms of a ~7 ms step on
// the dev VM, spent on the executor while both cores' shards waited).
//
// Contract: batches run one at a time, each in order, in the order they were started; Start() first waits
// for the previous batch, and Join() waits for the current one, so a caller that joins before running
// callbacks itself keeps every sink's callbacks in order. Batches smaller than `inline_below` run inline
// (waking a thread costs more than they do). Callbacks must not call Start or Join.
//
// While a decode step runs, the row workers are pinned to every CPU and busy, so the deliverer's thread
// runs when it preempts one; on the project's 2-core VM it often waited for the step's end, and 14-15% of a
// stream's token hand-overs then came in pairs (one run; benchmarks/README.md, fifteenth pass; a shorter
// scheduler slice for this thread did not change that).
//
// Thread safety: Start and Join are for one thread (the executor); the batch runs on the deliverer's
// thread.
#ifndef BRT_SERVER_CORE_EVENT_DELIVERER_H_
#define BRT_SERVER_CORE_EVENT_DELIVERER_H_

#include <cstddef>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace brt {

class EventDeliverer {
 public:
  using Events = std::vector<std::function<void()>>;

  // The thread is named "brt-deliver".
  explicit EventDeliverer(size_t inline_below);
  ~EventDeliverer();  // runs what was started, then stops the thread
  EventDeliverer(const EventDeliverer&) = delete;
  EventDeliverer& operator=(const EventDeliverer&) = delete;

  void Start(Events events);
  void Join();

 private:
  void Loop();

  const size_t inline_below_;
  absl::Mutex mu_;
  Events batch_ ABSL_GUARDED_BY(mu_);
  bool pending_ ABSL_GUARDED_BY(mu_) = false;  // a batch was started and has not finished
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_EVENT_DELIVERER_H_
