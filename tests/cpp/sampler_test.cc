#include "server/core/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>

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

TEST(SamplerTest, GreedyIsTheFirstLargestWhateverTheLengthAndTies) {
  // The lane-wise argmax against std::max_element: lengths around its lane count, ties (the first wins),
  // -0 beside +0, -inf everywhere, and the maximum in the tail after the last full group of lanes.
  SamplingConfig c;
  c.temperature = 0;
  Sampler s(c);
  std::mt19937 rng(3);
  for (size_t n : {1u, 7u, 8u, 9u, 15u, 16u, 17u, 4095u, 4096u}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> l(n);
      for (auto& x : l) x = -static_cast<float>(rng() % 5);  // many ties, including at the maximum
      if (trial == 1) l.assign(n, -std::numeric_limits<float>::infinity());
      if (trial == 2 && n > 1) l[n - 1] = 1.0f;  // the tail
      if (trial == 3) l.assign(n, -0.0f), l[n / 2] = 0.0f;
      const auto want = std::max_element(l.begin(), l.end()) - l.begin();
      ASSERT_EQ(s.Sample(l, {}), want) << "n " << n << " trial " << trial;
    }
  }
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

TEST(SamplerTest, TopPKeepsExactlyTheNucleusOfAShuffledVocabulary) {
  // 1,000 tokens with probabilities proportional to their rank (rank r, 1-based from the least likely,
  // has r / 500,500), their ids shuffled. top_p = the mass of the 300 most likely plus half of the
  // 301st's: exactly those 301 are kept. Every draw must come from them, and the boundary token (rank 700
  // from the bottom, ~0.14% a draw) must be drawn; the one just outside it must not.
  constexpr int kV = 1000;
  std::vector<int32_t> id_of_rank(kV);
  std::iota(id_of_rank.begin(), id_of_rank.end(), 0);
  std::shuffle(id_of_rank.begin(), id_of_rank.end(), std::mt19937(11));
  std::vector<double> p(kV);
  for (int r = 1; r <= kV; ++r) p[id_of_rank[r - 1]] = r / 500500.0;
  double top = 0;
  for (int r = kV; r > kV - 300; --r) top += r / 500500.0;
  SamplingConfig c;
  c.seed = 5;
  c.top_p = static_cast<float>(top + 0.5 * (kV - 300) / 500500.0);
  std::set<int32_t> nucleus(id_of_rank.end() - 301, id_of_rank.end());
  auto h = Histogram(c, Logp(p), 20000);
  for (const auto& [id, n] : h) ASSERT_TRUE(nucleus.count(id)) << "token " << id << " drawn " << n << " times";
  EXPECT_GT(h[id_of_rank[kV - 301]], 0) << "the nucleus's least likely token was never drawn";
  EXPECT_GT(h.size(), 290u);
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

// A plain implementation that sorts every candidate to decide which ones the cuts keep, then draws among
// the kept ones in id order with their weights exp(logit / T - max / T) (in float), as Sampler does. Built once per
// distribution and configuration (the test's draws share it; sorting 4,096 candidates per draw was slow
// under ASan).
struct SortAll {
  std::vector<int32_t> kept;  // in id order
  std::vector<double> w;      // their weights
  double total = 0;

  SortAll(const SamplingConfig& c, const std::vector<float>& l) {
    const size_t v = l.size();
    std::vector<int32_t> order(v);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    size_t keep = c.top_k > 0 && c.top_k < v ? c.top_k : v;
    const float inv_t = static_cast<float>(1.0 / c.temperature), shift = l[order[0]] * inv_t;
    std::vector<double> weight(v), p(keep);
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) {
      weight[order[i]] = std::exp(l[order[i]] * inv_t - shift);
      sum += weight[order[i]];
    }
    for (size_t i = 0; i < keep; ++i) p[i] = weight[order[i]] / sum;
    if (c.min_p > 0) {
      size_t k = 1;
      while (k < keep && p[k] >= c.min_p * p[0]) ++k;
      keep = k;
    }
    if (c.top_p < 1) {
      double cum = 0;
      size_t k = 0;
      while (k < keep) {
        cum += p[k++];
        if (cum >= c.top_p) break;
      }
      keep = std::max<size_t>(k, 1);
    }
    kept.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep));
    std::sort(kept.begin(), kept.end());
    for (int32_t id : kept) {
      w.push_back(weight[id]);
      total += weight[id];
    }
  }

  // The draw for a uniform u in [0, 1).
  int32_t Draw(double u) const {
    u *= total;
    for (size_t i = 0; i < kept.size(); ++i) {
      u -= w[i];
      if (u < 0) return kept[i];
    }
    return kept.back();
  }
};

TEST(SamplerTest, DrawsWhatSortingEveryCandidateDraws) {
  // A language-model-like distribution over 1,024 tokens (a few likely ones, a long tail, some ties),
  // under each kind of cut; the same seed's uniforms feed both implementations. (Small enough for the
  // ASan -O0 build: a draw over 4,096 tokens took 2.5 ms there.)
  std::mt19937 rng(7);
  std::vector<float> l(1024);
  std::exponential_distribution<double> e(0.7);
  for (auto& x : l) x = static_cast<float>(-3.0 - e(rng) * 4);
  for (int i = 0; i < 20; ++i) l[rng() % 1024] = static_cast<float>(-0.5 - e(rng));
  l[17] = l[18] = -0.9f;  // a tie
  std::vector<SamplingConfig> configs(6);
  configs[0].temperature = 1.0f;
  configs[1].temperature = 0.7f, configs[1].top_p = 0.9f;
  configs[2].temperature = 1.2f, configs[2].top_k = 50;
  configs[3].temperature = 0.8f, configs[3].min_p = 0.05f;
  configs[4].temperature = 2.0f, configs[4].top_p = 0.999f;
  configs[5].temperature = 1.0f, configs[5].top_k = 700, configs[5].top_p = 0.98f;
  for (size_t k = 0; k < configs.size(); ++k) {
    SamplingConfig c = configs[k];
    c.seed = 99;
    Sampler s(c);
    const SortAll reference(c, l);
    std::mt19937_64 same(c.seed);  // Sampler's generator and uniform conversion, replayed
    std::map<int32_t, int> tail;
    for (int i = 0; i < 500; ++i) {
      const double u = static_cast<double>(same() >> 11) * 0x1.0p-53;
      const int32_t got = s.Sample(l, {});
      ASSERT_EQ(got, reference.Draw(u)) << "config " << k << " draw " << i;
      tail[got]++;
    }
    if (k == 0 || k == 4) {
      EXPECT_GT(tail.size(), 100u) << "the draws reached the tail (config " << k << ")";
    }
  }
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
