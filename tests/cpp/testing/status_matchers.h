// StatusIs: exact-code matchers for absl::Status / absl::StatusOr (Abseil 20220623 has none).
//   EXPECT_THAT(engine->GetSession("s_x"), StatusIs(absl::StatusCode::kNotFound));
//   EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top_k")));
#ifndef BRT_TESTS_CPP_TESTING_STATUS_MATCHERS_H_
#define BRT_TESTS_CPP_TESTING_STATUS_MATCHERS_H_

#include <gmock/gmock.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace brt::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER_P(StatusIs, code, std::string("has status code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s.ToString();
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher,
           std::string("has status code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s.ToString();
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

#define BRT_ASSERT_OK(expr) \
  ASSERT_TRUE(::brt::testing::GetStatus(expr).ok()) << ::brt::testing::GetStatus(expr)
#define BRT_EXPECT_OK(expr) \
  EXPECT_TRUE(::brt::testing::GetStatus(expr).ok()) << ::brt::testing::GetStatus(expr)

}  // namespace brt::testing

#endif  // BRT_TESTS_CPP_TESTING_STATUS_MATCHERS_H_
