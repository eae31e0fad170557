#include "client/core/summary.h"

#include <gtest/gtest.h>

#include <cmath>

namespace brt::client {
namespace {

TEST(SummaryTest, DerivesFiguresLikeTheServer) {
  const Summary s = Summary::Of(4, 10, 8.0);
  EXPECT_DOUBLE_EQ(s.mean_nll, 2.0);
  EXPECT_DOUBLE_EQ(s.perplexity, std::exp(2.0));
  EXPECT_DOUBLE_EQ(s.bits_per_token, 2.0 / std::log(2.0));
  EXPECT_DOUBLE_EQ(s.bits_per_byte, 8.0 / std::log(2.0) / 10);
}

TEST(SummaryTest, EmptyIsZeroNotNan) {
  const Summary s = Summary::Of(0, 0, 0);
  EXPECT_EQ(s.mean_nll, 0);
  EXPECT_EQ(s.bits_per_byte, 0);
  EXPECT_EQ(s.perplexity, 1);
}

TEST(SummaryTest, TotalSumsCountsAndRederives) {
  const Summary parts[] = {Summary::Of(2, 5, 2.0), Summary::Of(6, 15, 10.0)};
  const Summary t = Total(parts, 2);
  EXPECT_EQ(t.tokens, 8u);
  EXPECT_EQ(t.bytes, 20u);
  EXPECT_DOUBLE_EQ(t.mean_nll, 1.5);
  const nlohmann::json j = SummaryToJson(t);
  EXPECT_EQ(j["tokens"], 8);
  EXPECT_DOUBLE_EQ(j["bits_per_token"].get<double>(), 1.5 / std::log(2.0));
}

}  // namespace
}  // namespace brt::client
