#include "client/core/text.h"

#include <gtest/gtest.h>

namespace brt::client {
namespace {

TEST(TextTest, ToValidUtf8ReplacesOnlyBadBytes) {
  EXPECT_EQ(ToValidUtf8("a\xC3\xA9z"), "a\xC3\xA9z");
  EXPECT_EQ(ToValidUtf8("a\xFFz"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(ToValidUtf8("\xC3"), "\xEF\xBF\xBD");                          // truncated sequence
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");          // overlong
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80").find("\xED"), std::string::npos);  // surrogate
}

TEST(TextTest, TsvEscapingRoundTripsAnyBytes) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  all += "\xE2\x82\xAC tab\tnl\n back\\slash";
  const std::string esc = EscapeTsvField(all);
  EXPECT_EQ(esc.find('\t'), std::string::npos);
  EXPECT_EQ(esc.find('\n'), std::string::npos);
  absl::StatusOr<std::string> back = UnescapeTsvField(esc);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, all);
  EXPECT_EQ(EscapeTsvField("caf\xC3\xA9"), "caf\xC3\xA9");
}

TEST(TextTest, UnescapeRejectsBrokenEscapes) {
  EXPECT_EQ(UnescapeTsvField("a\\").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UnescapeTsvField("\\x4").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UnescapeTsvField("\\xZZ").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UnescapeTsvField("\\q").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TextTest, ForTerminalShowsNewlinesAndTabs) {
  EXPECT_EQ(ForTerminal("a\nb\tc\x01"),
            "a\xE2\x8F\x8E"
            "b\xE2\x86\x92"
            "c");
}

TEST(TextTest, BoundariesSkipContinuationBytes) {
  const std::string s = "a\xC3\xA9z";  // a é z
  EXPECT_EQ(Utf8BoundaryForward(s, 2), 3u);
  EXPECT_EQ(Utf8BoundaryBackward(s, 2), 1u);
  EXPECT_EQ(Utf8BoundaryForward(s, 1), 1u);
  EXPECT_EQ(Utf8BoundaryBackward(s, 99), s.size());
}

}  // namespace
}  // namespace brt::client
