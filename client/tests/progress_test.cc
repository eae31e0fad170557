#include "client/core/progress.h"

#include <gtest/gtest.h>

namespace brt::client {
namespace {

TEST(ProgressTest, FormatsBarRateAndEta) {
  const std::string s = FormatProgress("book", 50, 100, 1000, 10.0, 10);
  EXPECT_EQ(s, "book [#####-----]  50%  1000 tok  100 tok/s  ETA 0:10");
}

TEST(ProgressTest, UnknownTotalAndZeroTimeDoNotDivideByZero) {
  EXPECT_NE(FormatProgress("", 0, 0, 0, 0, 4).find("100%"), std::string::npos);
  EXPECT_NE(FormatProgress("", 0, 10, 0, 0, 4).find("ETA ?"), std::string::npos);
}

TEST(ProgressTest, DurationsInMinutesAndHours) {
  EXPECT_EQ(FormatDuration(62), "1:02");
  EXPECT_EQ(FormatDuration(3723), "1:02:03");
  EXPECT_EQ(FormatDuration(-1), "?");
}

}  // namespace
}  // namespace brt::client
