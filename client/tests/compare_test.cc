#include "client/core/compare.h"

#include <gtest/gtest.h>

#include <cmath>

namespace brt::client {
namespace {

// Rows for `text` split into the given pieces, NLLs 1.0 carried and `reset` given per row.
std::vector<TokenRow> Tokenize(const std::vector<std::string>& pieces) {
  std::vector<TokenRow> rows;
  uint64_t off = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    TokenRow r;
    r.position = i + 1;
    r.token_id = static_cast<uint32_t>(std::hash<std::string>()(pieces[i]) % 1000);
    r.piece = pieces[i];
    r.byte_begin = off;
    off += pieces[i].size();
    r.byte_end = off;
    r.nll = 1.0;
    rows.push_back(r);
  }
  return rows;
}

TEST(CompareTest, CutsAfterTheFirstNewlinePastTheMark) {
  //                                   0    1    2     3    4    5     6    7
  const auto rows = Tokenize({"a", "b", "\n", "c", "d", "e", "\n", "f"});
  const std::vector<Segment> segs = CutAtNewlines(rows, 2);
  ASSERT_EQ(segs.size(), 3u);
  EXPECT_EQ(segs[0].first_token, 0u);
  EXPECT_EQ(segs[0].end_token, 3u);  // mark at token 1; first newline at or after it is token 2
  EXPECT_EQ(segs[1].first_token, 3u);
  EXPECT_EQ(segs[1].end_token, 7u);
  EXPECT_EQ(segs[1].byte_begin, 3u);
  EXPECT_EQ(segs[1].byte_end, 7u);
  EXPECT_EQ(segs[2].first_token, 7u);  // no newline left: the rest
  EXPECT_EQ(segs[2].end_token, 8u);
}

TEST(CompareTest, EverySegmentButTheLastHasAtLeastTheMinimumAndEndsAtALineEnd) {
  std::vector<std::string> pieces;
  for (int i = 0; i < 500; ++i) pieces.push_back(i % 7 == 6 ? "\n" : "w");
  const auto rows = Tokenize(pieces);
  const std::vector<Segment> segs = CutAtNewlines(rows, 16);
  size_t covered = 0;
  for (size_t k = 0; k < segs.size(); ++k) {
    EXPECT_EQ(segs[k].first_token, covered);
    covered = segs[k].end_token;
    if (k + 1 < segs.size()) {
      EXPECT_GE(segs[k].end_token - segs[k].first_token, 16u);
      EXPECT_EQ(rows[segs[k].end_token - 1].piece, "\n");
    }
  }
  EXPECT_EQ(covered, rows.size());
}

TEST(CompareTest, NoNewlineMeansOneSegment) {
  const auto rows = Tokenize({"a", "b", "c"});
  const std::vector<Segment> segs = CutAtNewlines(rows, 1);
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].end_token, 3u);
}

TEST(CompareTest, DistanceToPreviousCountsTokensBack) {
  auto rows = Tokenize({"x", "y", "x", "z", "y", "x"});
  const auto d = DistanceToPrevious(rows);
  EXPECT_FALSE(d[0].has_value());
  EXPECT_FALSE(d[1].has_value());
  EXPECT_EQ(d[2], 2u);
  EXPECT_FALSE(d[3].has_value());
  EXPECT_EQ(d[4], 3u);
  EXPECT_EQ(d[5], 3u);
}

TEST(CompareTest, ExcerptStaysOnCharacterBoundaries) {
  const std::string text = "\xC3\xA9\xC3\xA9 name \xC3\xA9\xC3\xA9";
  // token "name" at bytes 5..9; 4 bytes before would start inside an é.
  const Excerpt e = MakeExcerpt(text, 5, 9, 4, 3);
  EXPECT_EQ(e.token, "name");
  EXPECT_EQ(e.before, "\xC3\xA9 ");
  EXPECT_EQ(e.after, " \xC3\xA9");
}

TEST(CompareTest, AnalyseReportsBothFiguresOverTheSameTokensAndTopGains) {
  const std::string text = "a b\nc d\n b e\n";
  auto rows = Tokenize({"a", " b", "\n", "c", " d", "\n", " b", " e", "\n"});
  const std::vector<double> reset = {1.0, 1.0, 1.0, 2.0, 1.5, 1.0, 4.0, 1.0, 0.5};
  for (size_t i = 0; i < rows.size(); ++i) rows[i].nll_reset = reset[i];
  const std::vector<Segment> segs = CutAtNewlines(rows, 3);
  ASSERT_EQ(segs.size(), 3u);
  CompareOptions opt;
  opt.window = 1;
  opt.reset_every = 3;
  opt.top = 2;
  const CompareReport r = Analyse("book", text, rows, segs, opt);
  EXPECT_EQ(r.carried.tokens, 9u);
  EXPECT_EQ(r.reset.tokens, 9u);
  EXPECT_NEAR(r.carried.bits_per_token, 1.0 / std::log(2.0), 1e-12);
  EXPECT_NEAR(r.reset.bits_per_token, 13.0 / 9 / std::log(2.0), 1e-12);
  EXPECT_EQ(r.carried_after_first.tokens, 6u);
  ASSERT_EQ(r.top.size(), 2u);
  EXPECT_EQ(r.top[0].index, 6u);  // " b": gain 3 nats
  EXPECT_DOUBLE_EQ(r.top[0].gain_nats, 3.0);
  EXPECT_EQ(r.top[0].since_reset, 0u);
  EXPECT_EQ(r.top[1].index, 3u);  // "c": gain 1
  EXPECT_EQ(r.top[0].excerpt.token, " b");

  const nlohmann::json j = CompareToJson(r, &rows);
  EXPECT_DOUBLE_EQ(j["carried_bits_per_token"].get<double>(), r.carried.bits_per_token);
  EXPECT_DOUBLE_EQ(j["reset_bits_per_token"].get<double>(), r.reset.bits_per_token);
  EXPECT_EQ(j["per_token"]["nll_reset"].size(), 9u);
  absl::StatusOr<TokenTable> back = TokenTableFromCompareJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->has_reset);
  EXPECT_EQ(back->rows[6].nll_reset, 4.0);
  EXPECT_NE(CompareToText(r).find("state carried"), std::string::npos);

  // Leaving out the first token after each reset drops " b" (index 6, a segment start).
  opt.skip_after_reset = 1;
  const CompareReport skipped = Analyse("book", text, rows, segs, opt);
  ASSERT_EQ(skipped.top.size(), 2u);
  EXPECT_EQ(skipped.top[0].index, 4u);  // " d": gain 0.5, one token after the reset at 3
  EXPECT_DOUBLE_EQ(skipped.carried.bits_per_token, r.carried.bits_per_token);
}

}  // namespace
}  // namespace brt::client
