// FileSnapshotStore: key validation, the write protocol (temp, fsync, rename, fsync dir), atomicity under
// injected faults, leftover temporary files, and the store factory.
#include "server/persistence/file_snapshot_store.h"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <thread>

#include "server/persistence/redis_snapshot_store.h"
#include "tests/cpp/persistence/fault_env.h"
#include "tests/cpp/persistence/test_util.h"

namespace brt::persistence {
namespace {

using ::brt::persistence::testing::FaultEnv;
using ::brt::persistence::testing::Op;
using ::brt::persistence::testing::StatusIs;
using ::brt::persistence::testing::StatusIsWithMessage;
using ::brt::persistence::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::unique_ptr<FileSnapshotStore> MustCreate(const std::string& dir, FileEnv* env = nullptr) {
  StoreOptions o;
  o.env = env;
  auto store = FileSnapshotStore::Create(dir, o);
  if (!store.ok()) ADD_FAILURE() << store.status();
  return std::move(*store);
}

TEST(SnapshotKeyTest, AcceptsSessionIdsAndRejectsEverythingElse) {
  BRT_EXPECT_OK(ValidateSnapshotKey("s_0123456789abcdef0123456789abcdef"));
  BRT_EXPECT_OK(ValidateSnapshotKey("A-z_9"));
  BRT_EXPECT_OK(ValidateSnapshotKey(std::string(128, 'k')));
  for (std::string bad : {std::string(""), std::string(129, 'k'), std::string("../etc"), std::string("a/b"),
                          std::string("a.snap"), std::string(".tmp-x"), std::string("a b"), std::string("a\0b", 3),
                          std::string("caf\xC3\xA9"), std::string("*"), std::string("a:b")}) {
    EXPECT_THAT(ValidateSnapshotKey(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST(FileSnapshotStoreTest, PutGetListDelete) {
  TempDir dir;
  auto store = MustCreate(dir.path());
  EXPECT_THAT(*store->List(), IsEmpty());
  BRT_ASSERT_OK(store->Put("s_b", "second"));
  BRT_ASSERT_OK(store->Put("s_a", std::string("fi\0rst", 6)));
  EXPECT_EQ(*store->Get("s_a"), std::string("fi\0rst", 6));
  EXPECT_EQ(*store->Get("s_b"), "second");
  EXPECT_THAT(*store->List(), ElementsAre("s_a", "s_b"));
  BRT_ASSERT_OK(store->Put("s_a", "replaced"));
  EXPECT_EQ(*store->Get("s_a"), "replaced");
  BRT_ASSERT_OK(store->Delete("s_a"));
  EXPECT_THAT(store->Get("s_a"), StatusIsWithMessage(absl::StatusCode::kNotFound, "s_a"));
  EXPECT_THAT(store->Delete("s_a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(*store->List(), ElementsAre("s_b"));
  EXPECT_THAT(DirEntries(dir.path()), ElementsAre("s_b.snap"));
  BRT_ASSERT_OK(store->Put("s_empty", ""));
  EXPECT_EQ(*store->Get("s_empty"), "");
}

TEST(FileSnapshotStoreTest, InvalidKeysNeverTouchTheFileSystem) {
  TempDir dir;
  FaultEnv env;
  auto store = MustCreate(dir.path() + "/store", &env);
  env.ClearLog();
  for (std::string bad : {std::string("../escape"), std::string("/abs"), std::string(""), std::string("a.b")}) {
    EXPECT_THAT(store->Put(bad, "x"), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(store->Get(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(store->Delete(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(env.Log(), IsEmpty());
  EXPECT_THAT(DirEntries(dir.path()), ElementsAre("store"));
}

TEST(FileSnapshotStoreTest, PutWritesTempThenSyncsRenamesAndSyncsTheDirectory) {
  TempDir dir;
  FaultEnv env;
  auto store = MustCreate(dir.path(), &env);
  env.ClearLog();
  BRT_ASSERT_OK(store->Put("s_x", "value"));
  EXPECT_THAT(env.Log(), ElementsAre("create", "append", "sync", "close", "rename", "syncdir"));
  env.ClearLog();
  BRT_ASSERT_OK(store->Delete("s_x"));
  EXPECT_THAT(env.Log(), ElementsAre("remove", "syncdir"));
}

TEST(FileSnapshotStoreTest, NonDurableModeSkipsFsync) {
  TempDir dir;
  FaultEnv env;
  StoreOptions o;
  o.env = &env;
  o.durable = false;
  auto store = *FileSnapshotStore::Create(dir.path(), o);
  env.ClearLog();
  BRT_ASSERT_OK(store->Put("s_x", "value"));
  EXPECT_THAT(env.Log(), ElementsAre("create", "append", "close", "rename"));
}

struct FaultCase {
  Op op;
  int err;
  absl::StatusCode code;
  bool new_value_visible;  // a failed directory fsync happens after the rename
};

void PrintTo(const FaultCase& c, std::ostream* os) {
  *os << testing::OpName(c.op) << " fails with errno " << c.err;
}

class FileStoreFaultTest : public ::testing::TestWithParam<FaultCase> {};

TEST_P(FileStoreFaultTest, FailedPutKeepsTheOldValueWholeAndLeavesNoTempFile) {
  const FaultCase& c = GetParam();
  TempDir dir;
  FaultEnv env;
  auto store = MustCreate(dir.path(), &env);
  const std::string old_value(100000, 'o');
  const std::string new_value(200000, 'n');
  BRT_ASSERT_OK(store->Put("s_k", old_value));
  env.FailNext(c.op, IoError(c.err, "injected"));
  EXPECT_THAT(store->Put("s_k", new_value), StatusIsWithMessage(c.code, "s_k"));
  auto got = store->Get("s_k");
  BRT_ASSERT_OK(got);
  EXPECT_EQ(*got, c.new_value_visible ? new_value : old_value);  // whole, never a mix
  EXPECT_THAT(DirEntries(dir.path()), ElementsAre("s_k.snap"));
  EXPECT_THAT(*store->List(), ElementsAre("s_k"));
  // The store still works afterwards.
  BRT_ASSERT_OK(store->Put("s_k", "later"));
  EXPECT_EQ(*store->Get("s_k"), "later");
}

INSTANTIATE_TEST_SUITE_P(
    Faults, FileStoreFaultTest,
    ::testing::Values(FaultCase{Op::kCreate, EACCES, absl::StatusCode::kPermissionDenied, false},
                      FaultCase{Op::kAppend, ENOSPC, absl::StatusCode::kResourceExhausted, false},
                      FaultCase{Op::kSync, EIO, absl::StatusCode::kInternal, false},
                      FaultCase{Op::kClose, EIO, absl::StatusCode::kInternal, false},
                      FaultCase{Op::kRename, EROFS, absl::StatusCode::kPermissionDenied, false},
                      FaultCase{Op::kSyncDir, EIO, absl::StatusCode::kInternal, true}),
    [](const ::testing::TestParamInfo<FaultCase>& info) { return testing::OpName(info.param.op); });

TEST(FileSnapshotStoreTest, TempFilesAreInvisibleAndCleanedOnCreate) {
  TempDir dir;
  {
    auto store = MustCreate(dir.path());
    BRT_ASSERT_OK(store->Put("s_kept", "v"));
  }
  // What a writer killed before its rename leaves behind, plus unrelated files.
  for (const char* name : {".tmp-s_kept-123-0", ".tmp-s_new-123-1", "README", "bad key.snap"}) {
    std::ofstream(dir.path() + "/" + name) << "partial";
  }
  StoreOptions keep;
  keep.clean_temp_files = false;
  auto store = *FileSnapshotStore::Create(dir.path(), keep);
  EXPECT_THAT(*store->List(), ElementsAre("s_kept"));
  EXPECT_EQ(*store->Get("s_kept"), "v");
  EXPECT_THAT(store->Get("s_new"), StatusIs(absl::StatusCode::kNotFound));
  store = MustCreate(dir.path());  // cleans
  EXPECT_THAT(DirEntries(dir.path()), ElementsAre("README", "bad key.snap", "s_kept.snap"));
}

TEST(FileSnapshotStoreTest, SizeLimits) {
  TempDir dir;
  StoreOptions o;
  o.max_value_bytes = 10;
  auto store = *FileSnapshotStore::Create(dir.path(), o);
  EXPECT_THAT(store->Put("s_big", std::string(11, 'x')), StatusIs(absl::StatusCode::kResourceExhausted));
  std::ofstream(dir.path() + "/s_big.snap") << std::string(11, 'x');  // planted by someone else
  EXPECT_THAT(store->Get("s_big"), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(FileSnapshotStoreTest, ConcurrentPutsOfOneKeyEachLandWhole) {
  TempDir dir;
  auto store = MustCreate(dir.path());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        EXPECT_TRUE(store->Put("s_shared", std::string(50000 + t, static_cast<char>('a' + t))).ok());
        EXPECT_TRUE(store->Put(absl::StrCat("s_own", t), std::string(1000, 'x')).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  const std::string v = *store->Get("s_shared");
  ASSERT_GE(v.size(), 50000u);
  const int t = static_cast<int>(v.size() - 50000);
  EXPECT_EQ(v, std::string(50000 + t, static_cast<char>('a' + t)));
  EXPECT_THAT(*store->List(), ElementsAre("s_own0", "s_own1", "s_own2", "s_own3", "s_shared"));
}

TEST(SnapshotStoreFactoryTest, FileUrisAndPlainPaths) {
  TempDir dir;
  auto a = CreateSnapshotStore("file://" + dir.path() + "/a/b/");
  BRT_ASSERT_OK(a);
  EXPECT_EQ((*a)->Describe(), "file://" + dir.path() + "/a/b");
  BRT_ASSERT_OK((*a)->Put("s_1", "x"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/a/b/s_1.snap"));
  auto plain = CreateSnapshotStore(dir.path() + "/plain");
  BRT_ASSERT_OK(plain);
  EXPECT_THAT(CreateSnapshotStore("file://relative/dir"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CreateSnapshotStore("s3://bucket"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CreateSnapshotStore(""), StatusIs(absl::StatusCode::kInvalidArgument));
  std::ofstream(dir.path() + "/afile") << "x";
  EXPECT_THAT(CreateSnapshotStore(dir.path() + "/afile"), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(RedisUriTest, ParsesEveryPart) {
  RedisStoreConfig c;
  BRT_ASSERT_OK(ParseRedisUri("redis://:p%40ss@10.0.0.5:6380/3?prefix=brt:&timeout_ms=50&connect_timeout_ms=70&pool=9", &c));
  EXPECT_EQ(c.host, "10.0.0.5");
  EXPECT_EQ(c.port, 6380);
  EXPECT_EQ(c.db, 3);
  EXPECT_EQ(c.password, "p@ss");
  EXPECT_EQ(c.prefix, "brt:");
  EXPECT_EQ(c.command_timeout_ms, 50);
  EXPECT_EQ(c.connect_timeout_ms, 70);
  EXPECT_EQ(c.pool_size, 9);
  RedisStoreConfig d;
  BRT_ASSERT_OK(ParseRedisUri("redis://localhost", &d));
  EXPECT_EQ(d.host, "localhost");
  EXPECT_EQ(d.port, 6379);
  EXPECT_EQ(d.db, 0);
  EXPECT_EQ(d.prefix, "brt:snap:");
  EXPECT_EQ(d.pool_size, 4);
  RedisStoreConfig v6;
  BRT_ASSERT_OK(ParseRedisUri("redis://[::1]:7000/0", &v6));
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 7000);
  for (const char* bad : {"redis://", "redis://h:0", "redis://h:99999", "redis://h:x", "redis://h/db",
                          "redis://h?nope=1", "redis://h?timeout_ms=-1", "redis://user@h", "redis://[::1",
                          "redis://h?prefix=%zz", "redis://h?pool=0", "redis://h?pool=65"}) {
    RedisStoreConfig e;
    EXPECT_THAT(ParseRedisUri(bad, &e), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

}  // namespace
}  // namespace brt::persistence
