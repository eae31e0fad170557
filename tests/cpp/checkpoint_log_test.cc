#include "server/core/checkpoint_log.h"

#include <gtest/gtest.h>

#include <numeric>

namespace brt {
namespace {

std::shared_ptr<const Checkpoint> At(int64_t position, bool fresh = false) {
  auto c = std::make_shared<Checkpoint>();
  c->position = position;
  c->fresh = fresh;
  return c;
}

std::vector<int32_t> Range(int32_t from, int32_t to) {
  std::vector<int32_t> v(to - from);
  std::iota(v.begin(), v.end(), from);
  return v;
}

// Feeds tokens [from, to) (token id = its position) and adds a checkpoint when due at a multiple of 8.
void Feed(CheckpointLog& log, int32_t from, int32_t to) {
  auto ids = Range(from, to);
  log.Append(from, ids.data(), ids.size());
  if (to % 8 == 0 && log.Due(to)) log.Add(At(to));
}

TEST(CheckpointLogTest, PlansFromTheNewestCheckpointAtOrBeforeThePosition) {
  CheckpointLog log(4, 8);
  log.Reset(At(0, /*fresh=*/true));
  for (int32_t p = 0; p < 40; p += 8) Feed(log, p, p + 8);  // checkpoints due at 8, 16, 24, 32, 40
  EXPECT_EQ(log.size(), 4u);
  EXPECT_EQ(log.earliest(), 16);
  auto plan = log.Plan(30);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->from->position, 24);
  EXPECT_EQ(plan->tokens, Range(24, 30));
  plan = log.Plan(40);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->from->position, 40);
  EXPECT_TRUE(plan->tokens.empty());
  plan = log.Plan(16);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->from->position, 16);
}

TEST(CheckpointLogTest, BeyondTheHorizonNamesTheEarliestPosition) {
  CheckpointLog log(2, 8);
  log.Reset(At(0, true));
  for (int32_t p = 0; p < 32; p += 8) Feed(log, p, p + 8);
  auto plan = log.Plan(10);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(plan.status().message().find("the earliest reachable position is 24"), std::string::npos)
      << plan.status();
}

TEST(CheckpointLogTest, RespectsTheInterval) {
  CheckpointLog log(8, 16);
  log.Reset(At(0, true));
  for (int32_t p = 0; p < 64; p += 8) Feed(log, p, p + 8);
  EXPECT_EQ(log.size(), 5u);  // 0 (fresh), 16, 32, 48, 64
  EXPECT_EQ(log.Plan(40)->from->position, 32);
}

TEST(CheckpointLogTest, TruncateDropsLaterCheckpointsAndTokens) {
  CheckpointLog log(8, 8);
  log.Reset(At(0, true));
  for (int32_t p = 0; p < 32; p += 8) Feed(log, p, p + 8);
  log.TruncateTo(16);
  EXPECT_EQ(log.end(), 16);
  EXPECT_EQ(log.Plan(16)->from->position, 16);
  Feed(log, 16, 24);  // continues after the rewind
  EXPECT_EQ(log.Plan(20)->tokens, Range(16, 20));
}

TEST(CheckpointLogTest, DisabledKeepsNothing) {
  CheckpointLog log(0, 8);
  log.Reset(At(0, true));
  Feed(log, 0, 8);
  EXPECT_EQ(log.size(), 0u);
  EXPECT_FALSE(log.Plan(0).ok());
}

}  // namespace
}  // namespace brt
