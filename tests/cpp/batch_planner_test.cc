// BatchPlanner: pure planning, no threads, no model.
#include "server/core/batch_planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace brt {
namespace {

PlannerOptions Opts(uint32_t batch = 4, uint32_t decode = 3, uint32_t blocks = 2) {
  return PlannerOptions{/*window=*/8, batch, decode, blocks};
}

TEST(BatchPlannerTest, MidBlockAndShortTailsDecodeFullBlocksScore) {
  BatchPlanner p(Opts());
  std::vector<RowCandidate> c = {
      {/*fed=*/3, /*pending=*/20, false},  // mid-block: decode
      {8, 5, false},                        // boundary, short, input closed: decode
      {8, 5, true},                         // boundary, short, more may come: wait
      {16, 8, true},                        // boundary, a whole block: score
      {0, 0, false},                        // nothing pending: nothing
  };
  BatchPlan plan = p.Plan(c);
  EXPECT_EQ(plan.decode, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(plan.score, (std::vector<size_t>{3}));
  EXPECT_EQ(plan.blocks, 1u);  // only one block pending
}

TEST(BatchPlannerTest, WithSpansTwoOrMoreTokensThatFitInTheBlockGoTogether) {
  PlannerOptions o = Opts();
  o.spans = true;
  BatchPlanner p(o);
  std::vector<RowCandidate> c = {
      {/*fed=*/3, /*pending=*/20, false},  // mid-block: the 5 tokens left in its block
      {8, 5, false},                        // boundary, short, input closed: all 5
      {8, 5, true},                         // boundary, short, more may come: wait
      {16, 8, true},                        // boundary, a whole block: score
      {7, 4, true},                         // one token left in its block: decode
      {9, 1, false},                        // one token pending: decode
      {0, 0, false},                        // nothing pending: nothing
  };
  BatchPlan plan = p.Plan(c);
  EXPECT_EQ(plan.span, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(plan.span_tokens, (std::vector<size_t>{5, 5}));
  EXPECT_EQ(plan.decode, (std::vector<size_t>{4, 5}));
  EXPECT_EQ(plan.score, (std::vector<size_t>{3}));
  // Span rows are capped at a score call's token budget (4 rows x 2 blocks = 8 rows) and rotate.
  std::vector<RowCandidate> many(11, RowCandidate{1, 30, false});
  std::set<size_t> seen;
  for (int round = 0; round < 2; ++round) {
    plan = p.Plan(many);
    EXPECT_EQ(plan.span.size(), 8u);
    seen.insert(plan.span.begin(), plan.span.end());
  }
  EXPECT_EQ(seen.size(), 11u);
}

TEST(BatchPlannerTest, FewerRowsGetMoreBlocksWithinTheCallBudget) {
  BatchPlanner p(Opts(/*batch=*/4, 3, /*blocks=*/2));
  // One row with 100 blocks pending: the whole budget (4 * 2 = 8 blocks) goes to it.
  BatchPlan plan = p.Plan({{0, 800, true}});
  EXPECT_EQ(plan.score.size(), 1u);
  EXPECT_EQ(plan.blocks, 8u);
  // Four rows: two blocks each; the shortest row bounds them all.
  plan = p.Plan({{0, 800, true}, {8, 800, true}, {16, 800, true}, {24, 8, false}});
  EXPECT_EQ(plan.score.size(), 4u);
  EXPECT_EQ(plan.blocks, 1u);
}

TEST(BatchPlannerTest, InvariantsHoldOnRandomCandidates) {
  std::srand(7);
  for (uint32_t batch : {1u, 3u, 8u}) {
   for (bool spans : {false, true}) {
    PlannerOptions o = Opts(batch, 5, 2);
    o.spans = spans;
    o.max_block_ends = batch == 3 ? 2 : 0;
    o.decode_rows_per_block_end = batch == 1 ? 0 : 4;
    o.chunked_prefill_tokens = batch == 8 ? 5 : 0;
    BatchPlanner p(o);
    for (int round = 0; round < 500; ++round) {
      std::vector<RowCandidate> c(std::rand() % 20);
      for (auto& r : c) {
        r.fed = std::rand() % 40;
        r.pending = std::rand() % 30;
        r.more_may_come = std::rand() % 2;
      }
      BatchPlan plan = p.Plan(c);
      EXPECT_LE(plan.decode.size(), 5u);
      EXPECT_LE(plan.score.size(), batch);
      std::set<size_t> seen;
      for (size_t i : plan.decode) EXPECT_TRUE(seen.insert(i).second) << "row planned twice";
      for (size_t i : plan.score) {
        EXPECT_TRUE(seen.insert(i).second) << "row planned twice";
        EXPECT_EQ(c[i].fed % 8, 0) << "score row not at a block boundary";
        EXPECT_GE(c[i].pending, plan.blocks * 8);
      }
      if (!plan.score.empty()) {
        EXPECT_GE(plan.blocks, 1u);
        EXPECT_LE(plan.blocks * plan.score.size(), batch * 2u);
      }
      for (size_t i : plan.decode) EXPECT_GT(c[i].pending, 0u);
      if (o.max_block_ends > 0) {
        size_t ends = 0;
        for (size_t i : plan.decode) ends += c[i].fed % 8 == 7;
        EXPECT_LE(ends, o.max_block_ends) << "too many rows completing a block";
      }
      if (o.decode_rows_per_block_end > 0) {
        size_t ends = 0;
        for (size_t i : plan.decode) ends += c[i].fed % 8 == 7;
        // Decodable rows are among the candidates: the share is at most this.
        EXPECT_LE(ends, std::max<size_t>(1, c.size() / o.decode_rows_per_block_end))
            << "rows completing a block beyond their share of the decode rows";
      }
      ASSERT_EQ(plan.span.size(), plan.span_tokens.size());
      if (!spans) EXPECT_TRUE(plan.span.empty());
      if (o.chunked_prefill_tokens > 0 && !plan.decode.empty()) {
        size_t fed = 0;
        for (size_t t : plan.span_tokens) fed += t;
        EXPECT_LE(fed, std::max<size_t>(2, o.chunked_prefill_tokens)) << "spans beyond the prefill budget";
      }
      EXPECT_LE(plan.span.size(), batch * 2u);
      for (size_t k = 0; k < plan.span.size(); ++k) {
        const size_t i = plan.span[k];
        EXPECT_TRUE(seen.insert(i).second) << "row planned twice";
        EXPECT_GE(plan.span_tokens[k], 2u);
        EXPECT_LE(plan.span_tokens[k], c[i].pending);
        EXPECT_LE(c[i].fed % 8 + static_cast<int64_t>(plan.span_tokens[k]), 8) << "span crosses its block";
      }
    }
   }
  }
}

TEST(BatchPlannerTest, RotatesSoNoRowStarves) {
  BatchPlanner p(Opts(/*batch=*/2, /*decode=*/2, 1));
  std::vector<RowCandidate> decode_rows(5, RowCandidate{1, 3, false});
  std::set<size_t> served;
  for (int i = 0; i < 3; ++i) {
    for (size_t r : p.Plan(decode_rows).decode) served.insert(r);
  }
  EXPECT_EQ(served.size(), 5u);
  std::vector<RowCandidate> score_rows(5, RowCandidate{8, 16, true});
  served.clear();
  for (int i = 0; i < 3; ++i) {
    for (size_t r : p.Plan(score_rows).score) served.insert(r);
  }
  EXPECT_EQ(served.size(), 5u);
}

// Sessions that started together reach the end of a block in the same step: with max_block_ends, at
// most that many of them complete it (and run the state update) per plan, in rotation, while the rows
// mid-block go on; the held rows are all served within ceil(n / max_block_ends) plans.
TEST(BatchPlannerTest, BlockEndsPerPlanAreCappedInRotation) {
  PlannerOptions o = Opts(/*batch=*/4, /*decode=*/64);
  o.max_block_ends = 3;
  BatchPlanner p(o);
  std::vector<RowCandidate> c(7, RowCandidate{/*fed=*/15, /*pending=*/1, false});  // 15 % 8 == 7
  c.push_back(RowCandidate{12, 1, false});                                          // mid-block
  c.push_back(RowCandidate{23, 1, false});                                          // another end
  std::set<size_t> served;
  for (int i = 0; i < 3; ++i) {
    BatchPlan plan = p.Plan(c);
    size_t ends = 0;
    for (size_t r : plan.decode) {
      if (c[r].fed % 8 == 7) {
        ++ends;
        served.insert(r);
      }
    }
    EXPECT_EQ(ends, 3u) << "plan " << i;
    EXPECT_NE(std::find(plan.decode.begin(), plan.decode.end(), 7u), plan.decode.end())
        << "the mid-block row is never held";
  }
  EXPECT_EQ(served.size(), 8u) << "every row at the end of its block is served within 3 plans";
  // At or under the cap nothing is held.
  std::vector<RowCandidate> few(3, RowCandidate{7, 1, false});
  EXPECT_EQ(p.Plan(few).decode.size(), 3u);
  o.max_block_ends = 0;
  BatchPlanner unlimited(o);
  EXPECT_EQ(unlimited.Plan(c).decode.size(), 9u);
}

// decode_rows_per_block_end: the rows completing a block in a plan are at most one per that many
// decodable rows (at least one), so a step's state updates stay a bounded share of its decode work.
TEST(BatchPlannerTest, BlockEndsAreAShareOfTheDecodeRows) {
  auto count_ends = [](const BatchPlan& plan, const std::vector<RowCandidate>& c) {
    size_t ends = 0;
    for (size_t r : plan.decode) ends += c[r].fed % 8 == 7;
    return ends;
  };
  PlannerOptions o = Opts(/*batch=*/4, /*decode=*/64);
  o.decode_rows_per_block_end = 16;
  BatchPlanner p(o);
  std::vector<RowCandidate> c(24, RowCandidate{/*fed=*/12, /*pending=*/1, false});  // mid-block
  c.resize(32, RowCandidate{/*fed=*/15, /*pending=*/1, false});                     // 8 at a block end
  std::set<size_t> served;
  for (int i = 0; i < 4; ++i) {
    BatchPlan plan = p.Plan(c);
    EXPECT_EQ(count_ends(plan, c), 2u) << "32 decodable rows: 2 of them may complete a block";
    EXPECT_EQ(plan.decode.size(), 26u) << "every mid-block row goes on";
    for (size_t r : plan.decode) {
      if (c[r].fed % 8 == 7) served.insert(r);
    }
  }
  EXPECT_EQ(served.size(), 8u) << "the held rows are served in rotation within 4 plans";
  // Fewer rows than the share: still one.
  std::vector<RowCandidate> few(6, RowCandidate{12, 1, false});
  few.resize(8, RowCandidate{15, 1, false});
  EXPECT_EQ(count_ends(p.Plan(few), few), 1u);
  // With max_block_ends as well, the smaller limit holds.
  o.max_block_ends = 1;
  BatchPlanner both(o);
  std::vector<RowCandidate> many(48, RowCandidate{12, 1, false});
  many.resize(64, RowCandidate{15, 1, false});
  EXPECT_EQ(count_ends(both.Plan(many), many), 1u);
  o.max_block_ends = 0;
  o.decode_rows_per_block_end = 0;
  BatchPlanner unlimited(o);
  EXPECT_EQ(count_ends(unlimited.Plan(many), many), 16u);
}

// chunked_prefill_tokens: while other rows decode, the span rows of a plan feed at most that many tokens
// in all (a row may get fewer than it could, and continues later); with no decode rows they take the
// full row cap, so prompts are fed at full speed when nobody is generating.
TEST(BatchPlannerTest, ChunkedPrefillBudgetsSpansOnlyWhileOthersDecode) {
  PlannerOptions o = Opts(/*batch=*/4, /*decode=*/64);
  o.spans = true;
  o.chunked_prefill_tokens = 6;
  std::vector<RowCandidate> c(2, RowCandidate{/*fed=*/7, /*pending=*/1, false});  // generating: decode
  c.resize(6, RowCandidate{/*fed=*/1, /*pending=*/20, false});                     // prompts: 7 fit each
  BatchPlanner p(o);
  std::set<size_t> served;
  for (int i = 0; i < 4; ++i) {
    BatchPlan plan = p.Plan(c);
    EXPECT_EQ(plan.decode.size(), 2u) << "the generating rows are never held for a prompt";
    ASSERT_EQ(plan.span.size(), 1u) << "plan " << i;
    EXPECT_EQ(plan.span_tokens[0], 6u) << "a row gets what is left of the budget, not all it could feed";
    served.insert(plan.span[0]);
  }
  EXPECT_EQ(served.size(), 4u) << "the prompts take turns";
  // Nobody generating: every prompt row, each with all that fits in its block.
  std::vector<RowCandidate> prompts(c.begin() + 2, c.end());
  BatchPlan idle = p.Plan(prompts);
  EXPECT_EQ(idle.span.size(), 4u);
  EXPECT_EQ(idle.span_tokens, (std::vector<size_t>{7, 7, 7, 7}));
  // A budget of 10: 7 tokens, then the 3 left to a second row; 8: 7, and the 1 left is not a span.
  o.chunked_prefill_tokens = 10;
  EXPECT_EQ(BatchPlanner(o).Plan(c).span_tokens, (std::vector<size_t>{7, 3}));
  o.chunked_prefill_tokens = 8;
  EXPECT_EQ(BatchPlanner(o).Plan(c).span_tokens, (std::vector<size_t>{7}));
  // Below 2 a span would be a decode row: the budget is at least 2.
  o.chunked_prefill_tokens = 1;
  EXPECT_EQ(BatchPlanner(o).Plan(c).span_tokens, (std::vector<size_t>{2}));
  // 0: no budget (the row cap alone).
  o.chunked_prefill_tokens = 0;
  EXPECT_EQ(BatchPlanner(o).Plan(c).span_tokens, (std::vector<size_t>{7, 7, 7, 7}));
}

}  // namespace
}  // namespace brt
