#include "server/core/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "server/core/sampling_params.h"
#include "tests/cpp/testing/status_matchers.h"

namespace brt {
namespace {

using ::brt::testing::StatusIs;

// log-probabilities of a distribution given as probabilities.
std::vector<float> Logp(std::vector<double> p) {
  std::vector<float> out;
  for (double x : p) out.push_back(static_cast<float>(std::log(x)));
  return out;
}

std::map<int, int> Histogram(SamplingConfig c, const std::vector<float>& lp, int n,
                             std::vector<int32_t> recent = {}) {
  Sampler s(c);
  std::map<int, int> h;
  for (int i = 0; i < n; ++i) h[s.Sample(lp, recent)]++;
  return h;
}

TEST(SamplerTest, GreedyPicksArgmax) {
  SamplingConfig c;
  c.temperature = 0;
  Sampler s(c);
  auto lp = Logp({0.1, 0.2, 0.6, 0.1});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.Sample(lp, {}), 2);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  SamplingConfig c;
  c.top_k = 1;
  auto h = Histogram(c, Logp({0.3, 0.4, 0.3}), 200);
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(h.begin()->first, 1);
}

TEST(SamplerTest, TopKRestrictsCandidates) {
  SamplingConfig c;
  c.top_k = 2;
  auto h = Histogram(c, Logp({0.1, 0.35, 0.15, 0.4}), 2000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_GT(h[1], 0);
  EXPECT_GT(h[3], 0);
}

TEST(SamplerTest, TopPKeepsSmallestNucleus) {
  SamplingConfig c;
  c.top_p = 0.7f;  // 0.5 + 0.3 reaches 0.7
  auto h = Histogram(c, Logp({0.5, 0.3, 0.15, 0.05}), 2000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_GT(h[0], h[1]);
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  SamplingConfig c;
  c.min_p = 0.5f;  // keep p >= 0.25
  auto h = Histogram(c, Logp({0.5, 0.3, 0.15, 0.05}), 2000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(h.count(2), 0u);
}

TEST(SamplerTest, FrequenciesFollowTheDistribution) {
  SamplingConfig c;
  c.seed = 3;
  auto h = Histogram(c, Logp({0.25, 0.75}), 20000);
  EXPECT_NEAR(h[1] / 20000.0, 0.75, 0.02);
}

TEST(SamplerTest, RepetitionPenaltyAvoidsRecentTokens) {
  SamplingConfig c;
  c.temperature = 0;
  c.repetition_penalty = 3.0f;
  Sampler s(c);
  auto lp = Logp({0.45, 0.4, 0.15});
  EXPECT_EQ(s.Sample(lp, {}), 0);
  EXPECT_EQ(s.Sample(lp, {0}), 1);
  c.repetition_window = 1;  // token 0 is outside the window
  Sampler s2(c);
  EXPECT_EQ(s2.Sample(lp, {0, 2}), 0);
}

TEST(SamplerTest, SameSeedSameTokens) {
  SamplingConfig c;
  c.seed = 1234;
  c.temperature = 1.3f;
  c.top_p = 0.95f;
  std::vector<double> p(100);
  for (int i = 0; i < 100; ++i) p[i] = (i + 1) / 5050.0;
  auto lp = Logp(p);
  Sampler a(c), b(c);
  std::vector<int32_t> sa, sb;
  for (int i = 0; i < 200; ++i) {
    sa.push_back(a.Sample(lp, sa));
    sb.push_back(b.Sample(lp, sb));
  }
  EXPECT_EQ(sa, sb);
  c.seed = 1235;
  Sampler d(c);
  std::vector<int32_t> sd;
  for (int i = 0; i < 200; ++i) sd.push_back(d.Sample(lp, sd));
  EXPECT_NE(sa, sd);
}

TEST(SamplingParamsTest, RejectsOutOfRangeValuesNamingTheField) {
  SamplingOverrides s;
  s.temperature = 6;
  EXPECT_THAT(
      ValidateSampling(s, 100, "sampling."),
      StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("sampling.temperature")));
  s = {};
  s.top_p = 0;
  EXPECT_THAT(ValidateSampling(s, 100, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("top_p")));
  s = {};
  s.min_p = 1;
  EXPECT_THAT(ValidateSampling(s, 100, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("min_p")));
  s = {};
  s.repetition_penalty = 0;
  EXPECT_THAT(ValidateSampling(s, 100, ""), StatusIs(absl::StatusCode::kInvalidArgument));
  s = {};
  s.top_k = 101;
  EXPECT_THAT(ValidateSampling(s, 100, ""), StatusIs(absl::StatusCode::kInvalidArgument));
  s = {};
  s.stop = {""};
  EXPECT_THAT(ValidateSampling(s, 100, ""), StatusIs(absl::StatusCode::kInvalidArgument));
  s = {};
  s.temperature = 0;
  s.top_p = 1;
  EXPECT_TRUE(ValidateSampling(s, 100, "").ok());
}

TEST(SamplingParamsTest, RequestOverridesSessionOverridesServer) {
  SamplingOverrides req, ses;
  SamplingConfig server;
  server.top_k = 5;
  ses.temperature = 0.5f;
  ses.seed = 9;
  req.temperature = 0.0f;
  ses.stop = {"x"};
  SamplingConfig c = ResolveSampling(req, ses, server);
  EXPECT_EQ(c.temperature, 0.0f);
  EXPECT_EQ(c.top_k, 5u);
  EXPECT_EQ(c.seed, 9u);
  EXPECT_EQ(c.stop, std::vector<std::string>{"x"});
}

}  // namespace
}  // namespace brt
