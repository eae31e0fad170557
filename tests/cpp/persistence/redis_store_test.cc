// RedisSnapshotStore against a real redis-server: put/get/delete/list, binary values, prefix
// isolation, SCAN paging, UNAVAILABLE while Redis is down and recovery when it is back.
#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "server/persistence/redis_snapshot_store.h"
#include "tests/cpp/persistence/redis_server.h"
#include "tests/cpp/persistence/test_util.h"

namespace brt::persistence {
namespace {

using ::brt::persistence::testing::RedisServer;
using ::brt::persistence::testing::StatusIs;
using ::brt::persistence::testing::StatusIsWithMessage;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

class RedisSnapshotStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!RedisServer::Available())
      GTEST_FAIL() << "no redis-server at " BRT_REDIS_SERVER
                      " (deploy/install-deps.sh installs it)";
    ASSERT_GT(server_.port(), 0);
    ASSERT_TRUE(server_.Start()) << "redis-server did not start on port " << server_.port();
  }

  std::unique_ptr<RedisSnapshotStore> MustCreate(std::string prefix = "test:") {
    auto store = RedisSnapshotStore::Create(server_.Config(std::move(prefix)));
    if (!store.ok()) ADD_FAILURE() << store.status();
    return std::move(*store);
  }

  RedisServer server_;
};

TEST_F(RedisSnapshotStoreTest, PutGetListDelete) {
  auto store = MustCreate();
  EXPECT_THAT(*store->List(), IsEmpty());
  BRT_ASSERT_OK(store->Put("s_b", "second"));
  BRT_ASSERT_OK(store->Put("s_a", "first"));
  EXPECT_EQ(*store->Get("s_a"), "first");
  EXPECT_THAT(*store->List(), ElementsAre("s_a", "s_b"));
  BRT_ASSERT_OK(store->Put("s_a", "replaced"));
  EXPECT_EQ(*store->Get("s_a"), "replaced");
  BRT_ASSERT_OK(store->Delete("s_a"));
  EXPECT_THAT(store->Get("s_a"), StatusIsWithMessage(absl::StatusCode::kNotFound, "s_a"));
  EXPECT_THAT(store->Delete("s_a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(*store->List(), ElementsAre("s_b"));
  EXPECT_THAT(store->Put("../x", "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->Get("a b"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(RedisSnapshotStoreTest, BinaryValuesRoundTripExactly) {
  auto store = MustCreate();
  std::string value(3 << 20, '\0');
  std::mt19937 rng(7);
  for (char& c : value) c = static_cast<char>(rng());
  BRT_ASSERT_OK(store->Put("s_bin", value));
  EXPECT_EQ(*store->Get("s_bin"), value);
  BRT_ASSERT_OK(store->Put("s_empty", ""));
  EXPECT_EQ(*store->Get("s_empty"), "");
}

TEST_F(RedisSnapshotStoreTest, PrefixesIsolateStoresEvenWithGlobCharacters) {
  auto star = MustCreate("a*");
  auto plain = MustCreate("ab:");
  BRT_ASSERT_OK(star->Put("s_1", "star"));
  BRT_ASSERT_OK(plain->Put("s_2", "plain"));
  EXPECT_THAT(*star->List(), ElementsAre("s_1"));
  EXPECT_THAT(*plain->List(), ElementsAre("s_2"));
  EXPECT_THAT(star->Get("s_2"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(RedisSnapshotStoreTest, ListPagesThroughScan) {
  auto store = MustCreate();
  auto other = MustCreate("other:");
  BRT_ASSERT_OK(other->Put("s_x", "x"));
  std::vector<std::string> want;
  for (int i = 0; i < 2500; ++i) {
    want.push_back(absl::StrCat("s_", 100000 + i));
    BRT_ASSERT_OK(store->Put(want.back(), "v"));
  }
  auto keys = store->List();
  BRT_ASSERT_OK(keys);
  EXPECT_EQ(*keys, want);
}

TEST_F(RedisSnapshotStoreTest, DatabasesAreSeparateThroughTheFactory) {
  auto db1 =
      CreateSnapshotStore(absl::StrCat("redis://127.0.0.1:", server_.port(), "/1?prefix=brt:"));
  auto db2 =
      CreateSnapshotStore(absl::StrCat("redis://127.0.0.1:", server_.port(), "/2?prefix=brt:"));
  BRT_ASSERT_OK(db1);
  BRT_ASSERT_OK(db2);
  BRT_ASSERT_OK((*db1)->Put("s_1", "one"));
  EXPECT_THAT((*db2)->Get("s_1"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(*(*db1)->Get("s_1"), "one");
  EXPECT_EQ((*db1)->Describe(),
            absl::StrCat("redis://127.0.0.1:", server_.port(), "/1 prefix 'brt:'"));
}

TEST_F(RedisSnapshotStoreTest, UnavailableWhileRedisIsDownThenRecovers) {
  auto store = MustCreate();
  BRT_ASSERT_OK(store->Put("s_1", "v"));
  server_.Stop();
  EXPECT_THAT(store->Put("s_1", "w"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(store->Get("s_1"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(store->Delete("s_1"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(store->List(), StatusIs(absl::StatusCode::kUnavailable));
  ASSERT_TRUE(server_.Start());
  BRT_ASSERT_OK(store->Put("s_2", "back"));  // reconnects by itself
  EXPECT_EQ(*store->Get("s_2"), "back");
}

// A hung Redis (SIGSTOP): a command costs one timeout (no retry after a timeout), a request deadline
// cuts it shorter, and callers on different pooled connections wait side by side, not one after the
// other (no lock is held during network I/O).
TEST_F(RedisSnapshotStoreTest, AHungRedisCostsOneTimeoutOrTheRequestDeadlineAndCallersWaitInParallel) {
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  };
  RedisStoreConfig config = server_.Config();
  config.command_timeout_ms = 400;
  config.pool_size = 2;
  auto created = RedisSnapshotStore::Create(config);
  BRT_ASSERT_OK(created.status());
  std::unique_ptr<RedisSnapshotStore> store = *std::move(created);
  BRT_ASSERT_OK(store->Put("s_1", "v"));
  server_.Pause();

  Clock::time_point t0 = Clock::now();
  EXPECT_THAT(store->Get("s_1"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_GE(ms_since(t0), 380);
  EXPECT_LT(ms_since(t0), 780) << "a timed-out command must not be retried";

  t0 = Clock::now();
  {
    ScopedStoreDeadline deadline(Clock::now() + std::chrono::milliseconds(120));
    EXPECT_THAT(store->Get("s_1"), StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded, "deadline"));
  }
  EXPECT_LT(ms_since(t0), 380) << "the request's deadline must cut the command's timeout short";

  t0 = Clock::now();
  std::vector<std::thread> callers;
  std::atomic<int> unavailable{0};
  for (int i = 0; i < 2; ++i) {
    callers.emplace_back([&] {
      if (absl::IsUnavailable(store->Get("s_1").status())) ++unavailable;
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(unavailable.load(), 2);
  EXPECT_LT(ms_since(t0), 780) << "two callers on two connections must time out together";

  server_.Resume();
  EXPECT_EQ(*store->Get("s_1"), "v");
}

TEST_F(RedisSnapshotStoreTest, LeasesHaveOneHolderAndFenceWrites) {
  auto a = MustCreate();
  auto b = MustCreate();
  ASSERT_TRUE(a->has_leases());
  std::string holder;
  EXPECT_TRUE(*a->AcquireLease("s_x", "replica-a", 60000, &holder));
  EXPECT_TRUE(*a->AcquireLease("s_x", "replica-a", 60000, &holder));  // renewal
  EXPECT_FALSE(*b->AcquireLease("s_x", "replica-b", 60000, &holder));
  EXPECT_EQ(holder, "replica-a");
  // Fenced writes: only the holder (or anyone once the lease is free) writes.
  BRT_ASSERT_OK(a->PutLeased("s_x", "from a", "replica-a", 60000));
  EXPECT_THAT(b->PutLeased("s_x", "from b", "replica-b", 60000),
              StatusIsWithMessage(absl::StatusCode::kAborted, "replica-a"));
  EXPECT_EQ(*b->Get("s_x"), "from a");
  // Leases are not snapshots.
  EXPECT_THAT(*a->List(), ElementsAre("s_x"));
  // Releasing by a non-holder does nothing; by the holder frees it.
  BRT_ASSERT_OK(b->ReleaseLease("s_x", "replica-b"));
  EXPECT_FALSE(*b->AcquireLease("s_x", "replica-b", 60000, &holder));
  BRT_ASSERT_OK(a->ReleaseLease("s_x", "replica-a"));
  EXPECT_TRUE(*b->AcquireLease("s_x", "replica-b", 60000, &holder));
  BRT_ASSERT_OK(b->PutLeased("s_x", "from b", "replica-b", 60000));
  EXPECT_EQ(*a->Get("s_x"), "from b");
}

TEST_F(RedisSnapshotStoreTest, AnExpiredLeaseCanBeTaken) {
  auto a = MustCreate();
  auto b = MustCreate();
  std::string holder;
  EXPECT_TRUE(*a->AcquireLease("s_y", "replica-a", 100, &holder));
  EXPECT_FALSE(*b->AcquireLease("s_y", "replica-b", 100, &holder));
  std::this_thread::sleep_for(std::chrono::milliseconds(250));  // a crashed holder stops renewing
  EXPECT_TRUE(*b->AcquireLease("s_y", "replica-b", 60000, &holder));
  EXPECT_THAT(a->PutLeased("s_y", "stale", "replica-a", 60000), StatusIs(absl::StatusCode::kAborted));
}

TEST(RedisSnapshotStoreNoServerTest, CreateIsUnavailableWhenNothingListens) {
  RedisStoreConfig c;
  c.port = testing::FreeLoopbackPort();
  c.connect_timeout_ms = 200;
  EXPECT_THAT(RedisSnapshotStore::Create(c),
              StatusIsWithMessage(absl::StatusCode::kUnavailable, "unreachable"));
  EXPECT_THAT(
      CreateSnapshotStore(absl::StrCat("redis://127.0.0.1:", c.port, "?connect_timeout_ms=200")),
      StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace brt::persistence
