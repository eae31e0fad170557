#include "client/core/plot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>

namespace brt::client {
namespace {

TEST(PlotTest, CumulativeBitsAverageTheTokensSoFar) {
  const std::vector<double> c = CumulativeBitsPerToken({std::log(2.0), 3 * std::log(2.0)});
  ASSERT_EQ(c.size(), 2u);
  EXPECT_DOUBLE_EQ(c[0], 1.0);
  EXPECT_DOUBLE_EQ(c[1], 2.0);
}

TEST(PlotTest, RunningMeanIsCentredAndShrinksAtTheEnds) {
  const std::vector<double> m = RunningMean({0, 0, 3, 0, 0}, 3);
  EXPECT_DOUBLE_EQ(m[2], 1.0);
  EXPECT_DOUBLE_EQ(m[1], 1.0);
  EXPECT_DOUBLE_EQ(m[0], 0.0);
  EXPECT_EQ(RunningMean({1, 2}, 1), (std::vector<double>{1, 2}));
}

TEST(PlotTest, PlotIndicesKeepEndsAndStayWithinBudget) {
  const std::vector<size_t> all = PlotIndices(10, 100);
  EXPECT_EQ(all.size(), 10u);
  const std::vector<size_t> idx = PlotIndices(1000000, 400);
  EXPECT_LE(idx.size(), 400u);
  EXPECT_EQ(idx.front(), 0u);
  EXPECT_EQ(idx.back(), 999999u);
  EXPECT_TRUE(std::is_sorted(idx.begin(), idx.end()));
  EXPECT_LE(idx[5], 20u);  // the logarithmic part keeps the start
}

TEST(PlotTest, ScriptQuotesPathsAndTitles) {
  PlotSpec spec;
  spec.out_png = "it's.png";
  spec.title = "a_b";
  spec.series.push_back({"/tmp/d.dat", "x", "lines", "#000000"});
  const std::string s = GnuplotScript(spec);
  EXPECT_NE(s.find("set output 'it''s.png'"), std::string::npos);
  EXPECT_NE(s.find("'a_b' noenhanced"), std::string::npos);
  EXPECT_NE(s.find("pngcairo"), std::string::npos);
}

TEST(PlotTest, CheckPngReadsTheHeader) {
  const std::string path = "/tmp/brt-plot-test-" + std::to_string(getpid()) + ".png";
  {
    std::ofstream f(path, std::ios::binary);
    const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13,
                                 'I',  'H', 'D', 'R', 0,    0,    4,    0xB0, 0, 0, 2, 0xBC};
    f.write(reinterpret_cast<const char*>(png), sizeof png);
  }
  uint32_t w = 0, h = 0;
  ASSERT_TRUE(CheckPng(path, &w, &h).ok());
  EXPECT_EQ(w, 1200u);
  EXPECT_EQ(h, 700u);
  {
    std::ofstream f(path, std::ios::binary);
    f << "not a png at all, really not";
  }
  EXPECT_EQ(CheckPng(path, &w, &h).code(), absl::StatusCode::kDataLoss);
  std::remove(path.c_str());
}

TEST(PlotTest, MissingGnuplotIsNotFound) {
  EXPECT_EQ(RunGnuplot("/nonexistent/gnuplot", "/dev/null").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace brt::client

namespace brt::client {
namespace {

TEST(PlotTest, FocusedRangeSkipsTheNoisyStartAndPads) {
  double lo = 0, hi = 0;
  ASSERT_TRUE(FocusedRange({{100, 50, 2, 3}, {1, 99, 2.5, 4}}, 2, &lo, &hi));
  EXPECT_NEAR(lo, 2 - 0.16, 1e-12);
  EXPECT_NEAR(hi, 4 + 0.16, 1e-12);
  EXPECT_FALSE(FocusedRange({}, 2, &lo, &hi));
}

}  // namespace
}  // namespace brt::client
