// ShardPool: jobs run on distinct workers at once, each worker's init runs first and once.
#include "server/model/shard_pool.h"
#include "server/model/cpu_affinity.h"
#include "server/model/spin_barrier.h"

#include <gtest/gtest.h>

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
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

// Threads meeting at a SpinBarrier phase after phase: after each Wait every thread sees what every other
// wrote before its Wait, and no thread runs ahead into the next phase's writes before all have read. Now
// and then one thread arrives late (milliseconds), so the others go to sleep and must be woken.
TEST(SpinBarrierTest, EveryPhaseSeesEveryThreadsWrites) {
  for (int n : {1, 2, 3}) {
    SpinBarrier barrier(n);
    EXPECT_EQ(barrier.parties(), n);
    constexpr int kPhases = 2000;
    std::vector<int> wrote(static_cast<size_t>(n), -1);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < n; ++t) {
      threads.emplace_back([&, t] {
        for (int phase = 0; phase < kPhases; ++phase) {
          wrote[static_cast<size_t>(t)] = phase;  // plain writes: the barrier orders them
          if (phase % 250 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(t == n - 1 ? 3 : 0));
          barrier.Wait();
          for (int u = 0; u < n; ++u) {
            if (wrote[static_cast<size_t>(u)] != phase) wrong.fetch_add(1);
          }
          barrier.Wait();
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(wrong.load(), 0) << n << " threads";
  }
}

TEST(ShardBoundsTest, EvenCostsSplitEvenlyAndHeavyRowsMoveTheBoundary) {
  EXPECT_EQ(ShardBounds(std::vector<double>(32, 1.0), 2), (std::vector<int64_t>{0, 16, 32}));
  EXPECT_EQ(ShardBounds(std::vector<double>(5, 1.0), 2), (std::vector<int64_t>{0, 2, 5}));
  // One row that also completes a block (1 + 3) near the front: its shard takes fewer rows (a tie goes
  // to the later shard).
  std::vector<double> cost(32, 1.0);
  cost[3] = 4.0;
  EXPECT_EQ(ShardBounds(cost, 2), (std::vector<int64_t>{0, 14, 32}));  // 17 and 18
  // Every shard keeps at least one row, however skewed the costs.
  EXPECT_EQ(ShardBounds({100.0, 1.0, 1.0}, 3), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(ShardBounds({1.0, 1.0, 100.0}, 2), (std::vector<int64_t>{0, 2, 3}));
  // More shards than rows: one row each; no rows: one empty shard.
  EXPECT_EQ(ShardBounds({1.0, 1.0}, 4), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(ShardBounds({}, 2), (std::vector<int64_t>{0, 0}));
}

TEST(CpuAffinityTest, WorkerCpusPinOnlyWhatTheModeAsksFor) {
  const std::vector<int> two = {0, 1}, four = {2, 3, 5, 7};
  // auto: only a pool as big as the CPUs this process may use.
  EXPECT_EQ(WorkerCpus(PinWorkers::kAuto, 2, two), (std::vector<int>{0, 1}));
  EXPECT_EQ(WorkerCpus(PinWorkers::kAuto, 4, four), (std::vector<int>{2, 3, 5, 7}));
  EXPECT_TRUE(WorkerCpus(PinWorkers::kAuto, 2, four).empty());
  EXPECT_TRUE(WorkerCpus(PinWorkers::kAuto, 3, two).empty());
  // on: always, round robin over the allowed CPUs.
  EXPECT_EQ(WorkerCpus(PinWorkers::kOn, 2, four), (std::vector<int>{2, 3}));
  EXPECT_EQ(WorkerCpus(PinWorkers::kOn, 3, two), (std::vector<int>{0, 1, 0}));
  // off, or nothing known about the CPUs: none.
  EXPECT_TRUE(WorkerCpus(PinWorkers::kOff, 2, two).empty());
  EXPECT_TRUE(WorkerCpus(PinWorkers::kOn, 2, {}).empty());
  EXPECT_EQ(CpuList({0, 1, 5}), "0,1,5");
}

TEST(CpuAffinityTest, ParsesTheModesAndNamesThemWhenWrong) {
  EXPECT_EQ(*ParsePinWorkers("auto"), PinWorkers::kAuto);
  EXPECT_EQ(*ParsePinWorkers("on"), PinWorkers::kOn);
  EXPECT_EQ(*ParsePinWorkers("off"), PinWorkers::kOff);
  auto bad = ParsePinWorkers("yes");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("auto"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("'yes'"), std::string::npos) << bad.status();
}

#if defined(__linux__)
TEST(CpuAffinityTest, PooledWorkersRunNamedOnTheCpusTheyWereGiven) {
  const std::vector<int> allowed = AllowedCpus();
  ASSERT_FALSE(allowed.empty());
  // --threads=0 means the CPUs of the affinity mask (a container's cpuset), not the machine's.
  EXPECT_EQ(UsableCpus(), static_cast<int>(allowed.size()));
  // Both workers on the last allowed CPU (a CPU the pool would not pick by itself): each job must see it.
  const std::vector<int> cpus = {allowed.back(), allowed.back()};
  ShardPool pool(2, [] {}, "brt-test", cpus);
  EXPECT_EQ(pool.pinned_cpus(), cpus);
  std::vector<int> ran(2, -1);
  std::vector<std::string> names(2);
  std::vector<std::function<void()>> jobs;
  for (int i = 0; i < 2; ++i) {
    jobs.push_back([&, i] {
      ran[static_cast<size_t>(i)] = sched_getcpu();
      char name[16] = {};
      pthread_getname_np(pthread_self(), name, sizeof(name));
      names[static_cast<size_t>(i)] = name;
    });
  }
  pool.Run(jobs);
  EXPECT_EQ(ran, (std::vector<int>{allowed.back(), allowed.back()}));
  EXPECT_EQ(names, (std::vector<std::string>{"brt-test-0", "brt-test-1"}));
  // A CPU this machine does not have is refused by the OS: the pool says none are pinned and still runs
  // its jobs.
  ShardPool refused(1, [] {}, "brt-test", {static_cast<int>(sysconf(_SC_NPROCESSORS_CONF))});
  EXPECT_TRUE(refused.pinned_cpus().empty());
  bool done = false;
  refused.Run({[&] { done = true; }});
  EXPECT_TRUE(done);
}
#endif

}  // namespace
}  // namespace brt
