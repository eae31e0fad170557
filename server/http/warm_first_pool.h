// WarmFirstPool: the HTTP server's worker threads (an httplib::TaskQueue; one task is one client
// connection). Unlike httplib's own pool, which wakes any idle worker, it hands each new connection to
// the worker that became idle most recently (a stack of idle workers), so work goes to the same few warm
// threads and the others stay cold.
//
// Why: the C library gives every thread that allocates its own heap, and each heap keeps the high-water
// mark of the temporaries it served (a whole-book request's body, JSON and token ids: about 10 MB per
// 300 KB of prompt). With "any idle worker", repeated large requests from one client warmed up a new heap
// per request until every worker had one (--http_threads of them). With the most recently idle worker
// first, the heaps in use are as many as the requests that actually ran at the same time.
//
// Connections that find no idle worker wait in a FIFO queue (as with httplib's pool; httplib's
// TaskQueue cannot refuse a connection).
//
// Thread safety: enqueue and shutdown may be called from any thread (httplib calls enqueue from its
// accept loop and shutdown once when the server stops).
#ifndef BRT_SERVER_HTTP_WARM_FIRST_POOL_H_
#define BRT_SERVER_HTTP_WARM_FIRST_POOL_H_

#include <httplib.h>

#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace brt::http {

class WarmFirstPool final : public httplib::TaskQueue {
 public:
  explicit WarmFirstPool(int threads);
  ~WarmFirstPool() override;
  WarmFirstPool(const WarmFirstPool&) = delete;
  WarmFirstPool& operator=(const WarmFirstPool&) = delete;

  void enqueue(std::function<void()> fn) override ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the queued connections, then joins the workers. Idempotent.
  void shutdown() override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Worker {
    absl::CondVar wake;
    std::function<void()> job;  // handed over by enqueue (guarded by the pool's mu_)
  };
  void Loop(Worker* self) ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  std::vector<std::unique_ptr<Worker>> workers_;  // fixed at construction
  std::vector<Worker*> idle_ ABSL_GUARDED_BY(mu_);  // back = most recently idle
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // joined by shutdown
};

}  // namespace brt::http

#endif  // BRT_SERVER_HTTP_WARM_FIRST_POOL_H_
