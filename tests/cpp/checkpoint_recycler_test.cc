// CheckpointRecycler: dropped checkpoints' buffers are handed to new ones, within a byte bound.
#include "server/core/checkpoint_recycler.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace brt {
namespace {

void Fill(Checkpoint& c, size_t kv_bytes, size_t state_bytes) {
  c.memory.kv.data.assign(kv_bytes, 'k');
  c.memory.state.data.assign(state_bytes, 's');
}

TEST(CheckpointRecyclerTest, ADroppedCheckpointsBuffersGoToTheNextOne) {
  auto r = CheckpointRecycler::Create(1 << 20);
  auto a = r->NewCheckpoint();
  EXPECT_TRUE(a->memory.kv.data.empty()) << "nothing to recycle yet";
  Fill(*a, 5000, 700);
  const char* kv_buffer = a->memory.kv.data.data();
  a.reset();
  EXPECT_EQ(r->kept(), 1u);
  EXPECT_GE(r->kept_bytes(), 5700u);
  auto b = r->NewCheckpoint();
  EXPECT_EQ(r->kept(), 0u);
  EXPECT_EQ(r->kept_bytes(), 0u);
  EXPECT_EQ(b->memory.kv.data.data(), kv_buffer) << "the same allocation, reused";
  EXPECT_GE(b->memory.kv.data.capacity(), 5000u);
}

TEST(CheckpointRecyclerTest, KeepsAtMostItsBytesAndIgnoresEmptyOnes) {
  auto r = CheckpointRecycler::Create(12000);
  std::vector<std::shared_ptr<Checkpoint>> live;
  for (int i = 0; i < 4; ++i) {
    live.push_back(r->NewCheckpoint());
    Fill(*live.back(), 5000, 0);
  }
  live.push_back(r->NewCheckpoint());  // empty: nothing to keep
  live.clear();
  EXPECT_EQ(r->kept(), 2u) << "two 5000-byte sets fit in 12000 bytes, a third does not";
  EXPECT_LE(r->kept_bytes(), 12000u);
  auto none = CheckpointRecycler::Create(0);
  auto c = none->NewCheckpoint();
  Fill(*c, 100, 100);
  c.reset();
  EXPECT_EQ(none->kept(), 0u);
}

TEST(CheckpointRecyclerTest, PrefillKeepsTouchedSetsWithinBothBoundsForTheFirstCheckpoints) {
  auto r = CheckpointRecycler::Create(10000);
  EXPECT_EQ(r->Prefill(7000, 3000, 400), 2u) << "two 3400-byte sets within 7000 bytes";
  EXPECT_EQ(r->kept(), 2u);
  EXPECT_EQ(r->Prefill(1 << 20, 3000, 400), 0u) << "a third would pass the recycler's 10000 bytes";
  EXPECT_EQ(r->Prefill(1 << 20, 0, 0), 0u);
  auto a = r->NewCheckpoint(), b = r->NewCheckpoint(), c = r->NewCheckpoint();
  EXPECT_GE(a->memory.kv.data.capacity(), 3000u);
  EXPECT_GE(b->memory.state.data.capacity(), 400u);
  EXPECT_TRUE(c->memory.kv.data.empty()) << "only two were prefilled";
  EXPECT_EQ(r->kept(), 0u);
  a.reset();
  EXPECT_EQ(r->kept(), 1u) << "a prefilled set returns like any dropped checkpoint's";
}

TEST(CheckpointRecyclerTest, CheckpointsOutliveTheirOwnerAndMayDropOnAnyThread) {
  std::shared_ptr<Checkpoint> survivor;
  {
    auto r = CheckpointRecycler::Create(1 << 20);
    survivor = r->NewCheckpoint();
    Fill(*survivor, 64, 64);
  }  // the owner lets go of the recycler; the checkpoint keeps it alive
  std::thread([&] { survivor.reset(); }).join();
  auto r = CheckpointRecycler::Create(1 << 20);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&r] {
      for (int i = 0; i < 200; ++i) {
        auto c = r->NewCheckpoint();
        Fill(*c, 256, 32);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GE(r->kept(), 1u);
  EXPECT_LE(r->kept(), 4u);
}

}  // namespace
}  // namespace brt
