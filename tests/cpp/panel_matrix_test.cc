// PanelMatrix and the attention helpers against plain loops in double precision, at every instruction set
// this CPU has (SimdLevel), and the AVX2 and AVX-512 products against each other bitwise.
#include "server/model/panel_matrix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace brt {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The levels this CPU can run, each test once per level.
std::vector<SimdLevel> LevelsHere() {
  std::vector<SimdLevel> levels;
  for (SimdLevel l : {SimdLevel::kPortable, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (l <= DetectedSimd()) levels.push_back(l);
  }
  return levels;
}

class PanelMatrixTest : public ::testing::TestWithParam<SimdLevel> {
 protected:
  void SetUp() override {
    LimitSimd(GetParam());
    ASSERT_EQ(ActiveSimd(), GetParam());
  }
  void TearDown() override { LimitSimd(SimdLevel::kAvx512); }
};

// Every row count a kernel call takes (AVX2: 1-6; AVX-512: 1-8, one or two panels at a time) and more,
// output widths that are and are not whole panels, strided rows, with and without accumulating.
TEST_P(PanelMatrixTest, MultipliesLikeTheTransposedWeight) {
  for (int64_t n : {1, 16, 37, 64}) {
    for (int64_t k : {1, 7, 64}) {
      const std::vector<float> w = Random(static_cast<size_t>(n * k), static_cast<uint32_t>(n * 100 + k));
      const PanelMatrix pm(w.data(), n, k);
      EXPECT_EQ(pm.n_out(), n);
      EXPECT_EQ(pm.k_in(), k);
      for (int64_t m : {1, 2, 5, 6, 7, 8, 9, 13, 16, 17, 32, 33}) {
        for (bool accumulate : {false, true}) {
          const int64_t ldx = k + 3, ldy = n + 5;
          const std::vector<float> x = Random(static_cast<size_t>(m * ldx), static_cast<uint32_t>(m));
          std::vector<float> y = Random(static_cast<size_t>(m * ldy), static_cast<uint32_t>(m + 1000));
          const std::vector<float> y0 = y;
          pm.Multiply(x.data(), m, ldx, y.data(), ldy, accumulate);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              double want = accumulate ? y0[static_cast<size_t>(i * ldy + j)] : 0.0;
              for (int64_t t = 0; t < k; ++t) {
                want += static_cast<double>(x[static_cast<size_t>(i * ldx + t)]) * w[static_cast<size_t>(j * k + t)];
              }
              ASSERT_NEAR(y[static_cast<size_t>(i * ldy + j)], want, 1e-4 * (1.0 + std::sqrt(double(k))))
                  << "n " << n << " k " << k << " m " << m << " row " << i << " col " << j;
            }
            // Padding between rows is never written.
            for (int64_t j = n; j < ldy; ++j) {
              ASSERT_EQ(y[static_cast<size_t>(i * ldy + j)], y0[static_cast<size_t>(i * ldy + j)]);
            }
          }
        }
      }
    }
  }
}

// Re-packed from rows (a strided W) or from columns (a strided W^T): the product is the same as from W.
TEST_P(PanelMatrixTest, SetFromRowsAndColumnsPackTheSameMatrix) {
  const int64_t n = 37, k = 20, ld = 45, m = 7;
  const std::vector<float> w = Random(static_cast<size_t>(n * k), 9);
  std::vector<float> rows(static_cast<size_t>(n * ld), 0.0f), cols(static_cast<size_t>(k * ld), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t < k; ++t) {
      rows[static_cast<size_t>(i * ld + t)] = w[static_cast<size_t>(i * k + t)];
      cols[static_cast<size_t>(t * ld + i)] = w[static_cast<size_t>(i * k + t)];
    }
  }
  const PanelMatrix plain(w.data(), n, k);
  PanelMatrix from_rows, from_cols(w.data(), 3, 2);  // re-packed over an older, smaller matrix
  from_rows.SetFromRows(rows.data(), n, k, ld);
  from_cols.SetFromColumns(cols.data(), k, n, ld);
  const std::vector<float> x = Random(static_cast<size_t>(m * k), 10);
  std::vector<float> a(static_cast<size_t>(m * n)), b(a.size()), c(a.size());
  plain.Multiply(x.data(), m, k, a.data(), n, false);
  from_rows.Multiply(x.data(), m, k, b.data(), n, false);
  from_cols.Multiply(x.data(), m, k, c.data(), n, false);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
}

// Split into parts (as a decode team's members split each product): together the parts write bitwise the
// whole product, each only its own columns, and PartColumns names them.
TEST_P(PanelMatrixTest, PartsComputeTheirColumnsOfTheWholeProduct) {
  const int64_t k = 24, m = 7, ldy = 90;
  for (int64_t n : {16, 37, 80}) {
    const std::vector<float> w = Random(static_cast<size_t>(n * k), 21);
    const PanelMatrix pm(w.data(), n, k);
    const std::vector<float> x = Random(static_cast<size_t>(m * k), 22);
    const std::vector<float> y0 = Random(static_cast<size_t>(m * ldy), 23);
    for (bool accumulate : {false, true}) {
      std::vector<float> whole = y0;
      pm.Multiply(x.data(), m, k, whole.data(), ldy, accumulate);
      for (int parts : {2, 3, 7}) {
        std::vector<float> joined = y0;
        int64_t next = 0;
        for (int part = 0; part < parts; ++part) {
          std::vector<float> mine = y0;
          pm.Multiply(x.data(), m, k, mine.data(), ldy, accumulate, part, parts);
          int64_t first = 0, last = 0;
          pm.PartColumns(part, parts, &first, &last);
          EXPECT_EQ(first, next) << "parts " << parts << " part " << part;
          next = last;
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < ldy; ++j) {
              const size_t at = static_cast<size_t>(i * ldy + j);
              if (j >= first && j < last) {
                joined[at] = mine[at];
              } else {
                ASSERT_EQ(mine[at], y0[at]) << "part " << part << " of " << parts << " wrote column " << j;
              }
            }
          }
        }
        EXPECT_EQ(next, n);
        EXPECT_EQ(joined, whole) << "n " << n << " parts " << parts;
      }
    }
  }
}

TEST_P(PanelMatrixTest, LogSoftmax) {
  for (int64_t n : {1, 5, 8, 13, 4096}) {
    std::vector<float> p = Random(static_cast<size_t>(n), static_cast<uint32_t>(n + 7));
    for (float& v : p) v *= 20.0f;
    std::vector<double> want(p.begin(), p.end());
    const double mx = *std::max_element(want.begin(), want.end());
    double sum = 0;
    for (double v : want) sum += std::exp(v - mx);
    LogSoftmaxInPlace(p.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double lp = want[static_cast<size_t>(i)] - mx - std::log(sum);
      EXPECT_NEAR(p[static_cast<size_t>(i)], lp, 1e-5 * (1.0 + std::abs(lp))) << n << " at " << i;
    }
  }
}

TEST_P(PanelMatrixTest, Softmax) {
  for (int64_t n : {1, 5, 8, 13, 64, 128}) {
    std::vector<float> p = Random(static_cast<size_t>(n), static_cast<uint32_t>(n));
    for (float& v : p) v *= 20.0f;  // logits far apart, some exp() arguments far below 0
    std::vector<double> want(p.begin(), p.end());
    const double mx = *std::max_element(want.begin(), want.end());
    double sum = 0;
    for (double& v : want) sum += (v = std::exp(v - mx));
    SoftmaxInPlace(p.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_NEAR(p[static_cast<size_t>(i)], want[static_cast<size_t>(i)] / sum, 1e-6 + 1e-6 * want[i] / sum)
          << n << " at " << i;
    }
  }
}

TEST_P(PanelMatrixTest, Dot) {
  for (int64_t n : {0, 1, 8, 15, 16, 17, 64, 100}) {
    const std::vector<float> a = Random(static_cast<size_t>(n), 1), b = Random(static_cast<size_t>(n), 2);
    double want = 0;
    for (int64_t i = 0; i < n; ++i) want += static_cast<double>(a[static_cast<size_t>(i)]) * b[static_cast<size_t>(i)];
    EXPECT_NEAR(Dot(a.data(), b.data(), n), want, 1e-4) << n;
  }
}

// One query over chosen rows of a strided key/value table, with and without a bias; head sizes the AVX2
// kernels take (multiples of 8, whole 32-float chunks or not) and one they leave to the portable loops.
TEST_P(PanelMatrixTest, AttendOneIsSoftmaxWeightedValues) {
  for (int64_t dh : {8, 16, 40, 64, 12}) {
    for (int64_t n : {1, 3, 4, 7, 64}) {
      for (bool with_bias : {false, true}) {
        const int64_t stride = dh + 5, table = 80;
        const std::vector<float> q = Random(static_cast<size_t>(dh), 3);
        const std::vector<float> keys = Random(static_cast<size_t>(table * stride), 4);
        const std::vector<float> values = Random(static_cast<size_t>(table * stride), 5);
        const std::vector<float> bias = Random(static_cast<size_t>(n), 6);
        std::vector<int32_t> rows;
        for (int64_t i = 0; i < n; ++i) rows.push_back(static_cast<int32_t>((i * 37 + 11) % table));
        std::vector<float> scores(static_cast<size_t>(n)), out(static_cast<size_t>(dh), -7.0f);
        const float alpha = 2.5f;
        AttendOne(q.data(), keys.data(), values.data(), stride, rows.data(), n, dh, with_bias ? bias.data() : nullptr,
                  alpha, scores.data(), out.data());
        std::vector<double> logit(static_cast<size_t>(n));
        double mx = -1e300, sum = 0;
        for (int64_t i = 0; i < n; ++i) {
          double dot = 0;
          for (int64_t e = 0; e < dh; ++e) dot += static_cast<double>(q[e]) * keys[rows[i] * stride + e];
          logit[i] = (dot + (with_bias ? bias[i] : 0.0)) * alpha;
          mx = std::max(mx, logit[i]);
        }
        for (int64_t i = 0; i < n; ++i) sum += std::exp(logit[i] - mx);
        for (int64_t e = 0; e < dh; ++e) {
          double want = 0;
          for (int64_t i = 0; i < n; ++i) want += std::exp(logit[i] - mx) / sum * values[rows[i] * stride + e];
          ASSERT_NEAR(out[static_cast<size_t>(e)], want, 1e-4) << "dh " << dh << " n " << n << " at " << e;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Simd, PanelMatrixTest, ::testing::ValuesIn(LevelsHere()),
                         [](const ::testing::TestParamInfo<SimdLevel>& info) {
                           return std::string(SimdLevelName(info.param));
                         });

TEST(PanelMatrixSimdTest, ParsesTheLevelNames) {
  SimdLevel level = SimdLevel::kPortable;
  EXPECT_TRUE(ParseSimdLevel("auto", &level));
  EXPECT_EQ(level, SimdLevel::kAvx512);
  EXPECT_TRUE(ParseSimdLevel("avx2", &level));
  EXPECT_EQ(level, SimdLevel::kAvx2);
  EXPECT_TRUE(ParseSimdLevel("portable", &level));
  EXPECT_EQ(level, SimdLevel::kPortable);
  EXPECT_FALSE(ParseSimdLevel("sse4", &level));
  for (SimdLevel l : {SimdLevel::kPortable, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    EXPECT_TRUE(ParseSimdLevel(SimdLevelName(l), &level));
    EXPECT_EQ(level, l);
  }
}

// The AVX-512 kernels (other row groups, two panels a call, masked partial panels) compute bitwise what the
// AVX2 kernels do: a server may switch (--native_simd) without its decode results changing.
TEST(PanelMatrixSimdTest, Avx512ProductsEqualAvx2ProductsBitwise) {
  if (DetectedSimd() < SimdLevel::kAvx512) GTEST_SKIP() << "this CPU has no AVX-512: nothing to compare";
  for (int64_t n : {1, 16, 37, 80, 300}) {
    for (int64_t k : {1, 7, 64, 256}) {
      const std::vector<float> w = Random(static_cast<size_t>(n * k), static_cast<uint32_t>(n + k));
      const PanelMatrix pm(w.data(), n, k);
      for (int64_t m = 1; m <= 40; ++m) {
        const int64_t ldx = k + 1, ldy = n + 3;
        const std::vector<float> x = Random(static_cast<size_t>(m * ldx), static_cast<uint32_t>(m));
        const std::vector<float> y0 = Random(static_cast<size_t>(m * ldy), static_cast<uint32_t>(m + 77));
        for (bool accumulate : {false, true}) {
          for (int parts : {1, 3}) {
            std::vector<float> got[2] = {y0, y0};
            for (int level = 0; level < 2; ++level) {
              LimitSimd(level == 0 ? SimdLevel::kAvx2 : SimdLevel::kAvx512);
              for (int part = 0; part < parts; ++part) {
                pm.Multiply(x.data(), m, ldx, got[level].data(), ldy, accumulate, part, parts);
              }
            }
            LimitSimd(SimdLevel::kAvx512);
            ASSERT_EQ(got[0], got[1]) << "n " << n << " k " << k << " m " << m << " accumulate " << accumulate
                                      << " parts " << parts;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace brt
