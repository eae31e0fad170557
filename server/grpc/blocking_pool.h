// BlockingPool: the threads on which the gRPC layer runs work that may block: snapshot store I/O (a
// restore on first use, a save, a delete, a lease) and waits for the executor (fork, rewind, save). gRPC's
// callback threads then never wait on Redis, a disk or the model, so a hung store delays only the calls
// that need it, and other calls keep being served.
//
// The queue is bounded: TrySubmit refuses work beyond `max_queue` waiting items, so a flood of such
// calls is refused at once (the caller answers UNAVAILABLE) instead of piling up.
//
// Thread safety: every method may be called from any thread. The destructor runs the work already
// queued, then joins the threads. Queued work may use the engine: once the grpc::Server has shut down
// (no new work), WaitIdle, then destroy the engine.
#ifndef BRT_SERVER_GRPC_BLOCKING_POOL_H_
#define BRT_SERVER_GRPC_BLOCKING_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace brt {

class BlockingPool {
 public:
  // threads >= 1; max_queue >= 1: items waiting for a thread (running ones are not counted).
  BlockingPool(int threads, size_t max_queue);
  ~BlockingPool();
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Queues `work` to run on a pool thread: false, and nothing queued, when max_queue items already wait.
  bool TrySubmit(std::function<void()> work) ABSL_LOCKS_EXCLUDED(mu_);

  // Returns once nothing is queued or running (work submitted meanwhile is waited for too). The server
  // calls it after gRPC has shut down, before it destroys the engine that queued work may still use.
  void WaitIdle() ABSL_LOCKS_EXCLUDED(mu_);

  // What a call refused by TrySubmit ends with: UNAVAILABLE naming the queue's size and the flag.
  absl::Status FullError() const;

  int threads() const { return static_cast<int>(threads_.size()); }
  size_t max_queue() const { return max_queue_; }

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  const size_t max_queue_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // items taken off the queue and not finished yet
  std::vector<std::thread> threads_;  // set in the constructor, joined in the destructor
};

}  // namespace brt

#endif  // BRT_SERVER_GRPC_BLOCKING_POOL_H_
