// WarmFirstPool (server/http/warm_first_pool.h): sequential connections stay on one warm worker, busy
// workers are never handed work, connections wait in order when all are busy, and shutdown runs what is
// queued.
#include "server/http/warm_first_pool.h"

#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace brt::http {
namespace {

using namespace std::chrono_literals;

TEST(WarmFirstPoolTest, OneClientAfterAnotherStaysOnTheSameWarmWorker) {
  WarmFirstPool pool(8);
  std::this_thread::sleep_for(50ms);  // every worker has started and is idle
  std::set<std::thread::id> ran_on;
  for (int i = 0; i < 20; ++i) {
    absl::Notification done;
    pool.enqueue([&] {
      ran_on.insert(std::this_thread::get_id());
      done.Notify();
    });
    done.WaitForNotification();
    std::this_thread::sleep_for(5ms);  // the worker is back on the idle stack
  }
  EXPECT_EQ(ran_on.size(), 1u);
  pool.shutdown();
}

TEST(WarmFirstPoolTest, BusyWorkersGetNoWorkAndExtraConnectionsWaitInOrder) {
  WarmFirstPool pool(3);
  absl::Mutex mu;
  std::set<std::thread::id> busy_threads;
  std::vector<int> order;
  absl::Notification release;
  std::atomic<int> started{0};
  for (int i = 0; i < 3; ++i) {
    pool.enqueue([&] {
      {
        absl::MutexLock lock(&mu);
        busy_threads.insert(std::this_thread::get_id());
      }
      ++started;
      release.WaitForNotification();
    });
  }
  while (started.load() < 3) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(busy_threads.size(), 3u);  // three connections, three workers
  for (int i = 0; i < 4; ++i) {
    pool.enqueue([&, i] {
      absl::MutexLock lock(&mu);
      order.push_back(i);
    });
  }
  std::this_thread::sleep_for(20ms);
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(order.empty());  // every worker is busy: they wait
  }
  release.Notify();
  pool.shutdown();  // runs what is queued, then joins
  absl::MutexLock lock(&mu);
  ASSERT_EQ(order.size(), 4u);
}

TEST(WarmFirstPoolTest, ShutdownIsIdempotentAndRunsQueuedWork) {
  auto pool = std::make_unique<WarmFirstPool>(1);
  absl::Notification release;
  std::atomic<int> ran{0};
  pool->enqueue([&] { release.WaitForNotification(); });
  for (int i = 0; i < 5; ++i) pool->enqueue([&] { ++ran; });
  release.Notify();
  pool->shutdown();
  EXPECT_EQ(ran.load(), 5);
  pool->shutdown();
  pool.reset();
}

}  // namespace
}  // namespace brt::http
