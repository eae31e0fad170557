// SessionTable and SlotAllocator: ids, capacity and slots, without a model or threads.
#include "server/core/session_table.h"

#include <gtest/gtest.h>

#include <set>

#include "server/core/session_id.h"
#include "tests/cpp/testing/status_matchers.h"

namespace brt {
namespace {

using ::brt::testing::StatusIs;

std::shared_ptr<SessionState> NewSession(int64_t last_used = 0) {
  auto s = std::make_shared<SessionState>();
  s->last_used_ms = last_used;
  return s;
}

TEST(SlotAllocatorTest, LowestFreeFirstAndExhaustion) {
  SlotAllocator a(3);
  EXPECT_EQ(*a.Take(), 0);
  EXPECT_EQ(*a.Take(), 1);
  EXPECT_EQ(*a.Take(), 2);
  EXPECT_THAT(a.Take(), StatusIs(absl::StatusCode::kResourceExhausted));
  a.Release(1);
  EXPECT_EQ(a.in_use(), 2);
  EXPECT_EQ(*a.Take(), 1);
}

TEST(SessionTableTest, InsertFindEraseAndCapacity) {
  SessionTable t(2);
  auto a = NewSession(), b = NewSession();
  ASSERT_TRUE(t.Insert(a, /*new_id=*/true).ok());
  ASSERT_TRUE(t.Insert(b, /*new_id=*/true).ok());
  EXPECT_TRUE(LooksLikeSessionId(a->id));
  EXPECT_NE(a->id, b->id);
  EXPECT_THAT(t.Insert(NewSession(), true),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("--max_sessions")));
  EXPECT_EQ(*t.Find(a->id), a);
  EXPECT_THAT(t.Find(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(t.Find(std::string(100000, 'x')),
              StatusIs(absl::StatusCode::kNotFound, ::testing::Not(::testing::HasSubstr(std::string(65, 'x')))));
  EXPECT_TRUE(t.Erase(a->id));
  EXPECT_FALSE(t.Erase(a->id));
  auto again = NewSession();
  again->id = b->id;
  EXPECT_THAT(t.Insert(again, /*new_id=*/false), StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST(SessionTableTest, SlotsAreGivenLazilyAndFreedOnErase) {
  SessionTable t(2);
  auto a = NewSession(), b = NewSession();
  ASSERT_TRUE(t.Insert(a, true).ok());
  ASSERT_TRUE(t.Insert(b, true).ok());
  EXPECT_EQ(a->slot, -1);
  EXPECT_TRUE(*t.EnsureSlot(*a));   // new slot: the caller initialises it
  EXPECT_FALSE(*t.EnsureSlot(*a));  // already has one
  EXPECT_TRUE(*t.EnsureSlot(*b));
  EXPECT_NE(a->slot, b->slot);
  const int32_t freed = a->slot;
  t.Erase(a->id);
  EXPECT_EQ(t.slots().in_use(), 1);
  auto c = NewSession();
  ASSERT_TRUE(t.Insert(c, true).ok());
  EXPECT_TRUE(*t.EnsureSlot(*c));
  EXPECT_EQ(c->slot, freed);
}

TEST(SessionTableTest, IdleByLastUseSkipsBusyAndSortsOldestFirst) {
  SessionTable t(5);
  auto old = NewSession(10), mid = NewSession(20), busy = NewSession(5);
  busy->job = std::shared_ptr<Job>(reinterpret_cast<Job*>(0x1), [](Job*) {});
  for (auto& s : {old, mid, busy}) ASSERT_TRUE(t.Insert(s, true).ok());
  auto idle = t.IdleByLastUse();
  ASSERT_EQ(idle.size(), 2u);
  EXPECT_EQ(idle[0].second, old->id);
  EXPECT_EQ(idle[1].second, mid->id);
}

}  // namespace
}  // namespace brt
