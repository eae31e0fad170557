#include "server/grpc/status_util.h"

#include <gtest/gtest.h>

#include <string>

namespace brt {
namespace {

TEST(StatusUtilTest, ShortInputIsQuotedWhole) {
  EXPECT_EQ(QuoteClientInput("s_0123"), "s_0123");
  EXPECT_EQ(QuoteClientInput(std::string(64, 'x')), std::string(64, 'x'));
}

TEST(StatusUtilTest, LongInputIsCutAndItsSizeSaid) {
  const std::string big(1 << 20, 'x');
  EXPECT_EQ(QuoteClientInput(big), std::string(64, 'x') + "... (1048576 bytes)");
}

TEST(StatusUtilTest, CutNeverSplitsAUtf8Sequence) {
  // 63 ASCII bytes then a 3-byte character straddling the 64-byte cut: the character is dropped whole.
  const std::string input = std::string(63, 'a') + "\xE6\x97\xA5" + std::string(100, 'b');
  EXPECT_EQ(QuoteClientInput(input), std::string(63, 'a') + "... (166 bytes)");
}

TEST(StatusUtilTest, LongStatusMessagesAreCappedAtTheEdge) {
  grpc::Status g = ToGrpcStatus(absl::NotFoundError(std::string(1 << 20, 'm')));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), std::string(kMaxStatusMessageBytes, 'm') + "... (truncated)");
  grpc::Status short_one = ToGrpcStatus(absl::InvalidArgumentError("top_k must be in [0, 20], got 21"));
  EXPECT_EQ(short_one.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(short_one.error_message(), "top_k must be in [0, 20], got 21");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace brt
