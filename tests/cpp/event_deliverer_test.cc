// EventDeliverer: batches run in order on its thread (small ones inline), Join waits for them.
#include "server/core/event_deliverer.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <string>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace brt {
namespace {

TEST(EventDelivererTest, BatchesRunInOrderOnItsThreadAndJoinWaitsForThem) {
  EventDeliverer d(/*inline_below=*/4);
  absl::Mutex mu;
  std::vector<int> seen;
  std::vector<std::thread::id> threads;
  for (int batch = 0; batch < 50; ++batch) {
    EventDeliverer::Events events;
    for (int i = 0; i < 6; ++i) {
      events.push_back([&, v = batch * 6 + i] {
        absl::MutexLock lock(&mu);
        seen.push_back(v);
        threads.push_back(std::this_thread::get_id());
      });
    }
    d.Start(std::move(events));
  }
  d.Join();
  ASSERT_EQ(seen.size(), 300u);
  for (int i = 0; i < 300; ++i) ASSERT_EQ(seen[i], i);
  for (const auto& t : threads) EXPECT_NE(t, std::this_thread::get_id());
}

TEST(EventDelivererTest, SmallBatchesRunInlineAfterTheRunningOne) {
  EventDeliverer d(/*inline_below=*/4);
  absl::Notification release;
  std::atomic<int> order{0};
  int slow_done_at = -1, small_at = -1;
  EventDeliverer::Events big;
  for (int i = 0; i < 4; ++i) big.push_back([] {});
  big.push_back([&] {
    release.WaitForNotification();
    slow_done_at = order++;
  });
  d.Start(std::move(big));
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release.Notify();
  });
  std::thread::id ran_on;
  d.Start({[&] {
    small_at = order++;
    ran_on = std::this_thread::get_id();
  }});  // waits for the running batch, then runs here
  releaser.join();
  EXPECT_EQ(slow_done_at, 0);
  EXPECT_EQ(small_at, 1);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(EventDelivererTest, DestructionRunsWhatWasStarted) {
  std::atomic<int> ran{0};
  {
    EventDeliverer d(/*inline_below=*/1);
    EventDeliverer::Events events;
    for (int i = 0; i < 10; ++i) events.push_back([&] { ran++; });
    d.Start(std::move(events));
  }
  EXPECT_EQ(ran.load(), 10);
}

#if defined(__linux__)
TEST(EventDelivererTest, ItsThreadIsNamed) {
  EventDeliverer d(/*inline_below=*/1);
  std::string name;
  d.Start({[&] {
    char buf[16] = {};
    pthread_getname_np(pthread_self(), buf, sizeof(buf));
    name = buf;
  }});
  d.Join();
  EXPECT_EQ(name, "brt-deliver");
}
#endif

}  // namespace
}  // namespace brt
