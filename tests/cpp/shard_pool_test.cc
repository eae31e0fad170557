// ShardPool: jobs run on distinct workers at once, each worker's init runs first and once.
#include "server/model/shard_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"

namespace brt {
namespace {

thread_local int inited = 0;

TEST(ShardPoolTest, RunsEveryJobOnItsOwnInitialisedWorkerAtOnce) {
  std::atomic<int> inits{0};
  ShardPool pool(3, [&] {
    inited++;
    inits++;
  });
  EXPECT_EQ(pool.threads(), 3);
  for (int round = 0; round < 200; ++round) {
    const int n = 1 + round % 3;
    // The jobs wait for each other: this only returns if they all run at the same time.
    absl::Barrier* barrier = new absl::Barrier(n);
    absl::Mutex mu;
    std::set<std::thread::id> ids;
    std::vector<int> seen(static_cast<size_t>(n), 0);
    std::vector<std::function<void()>> jobs;
    for (int i = 0; i < n; ++i) {
      jobs.push_back([&, i] {
        if (barrier->Block()) delete barrier;
        absl::MutexLock lock(&mu);
        ids.insert(std::this_thread::get_id());
        seen[static_cast<size_t>(i)] = inited;
      });
    }
    pool.Run(jobs);
    EXPECT_EQ(ids.size(), static_cast<size_t>(n));
    EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u) << "a job ran on the caller";
    for (int s : seen) EXPECT_EQ(s, 1) << "a job ran on a worker whose init had not run once";
  }
  EXPECT_EQ(inits.load(), 3);
}

TEST(ShardPoolTest, StopsCleanlyWithoutWork) {
  ShardPool pool(2, [] {});
}

}  // namespace
}  // namespace brt
