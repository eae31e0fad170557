#include "server/http/http_errors.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/core/client_text.h"
#include "server/http/completion_response.h"

namespace brt {
namespace http {

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(const absl::Status& status) {
  const int http = HttpStatusOf(status.code());
  const char* type = http == 401   ? "authentication_error"
                     : http == 403 ? "permission_error"
                     : http == 404 ? "not_found_error"
                     : http == 429 ? "rate_limit_error"
                     : http >= 500 ? "server_error"
                                   : "invalid_request_error";
  const std::string code = absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
  const std::string_view message(status.message().data(), status.message().size());
  return absl::StrCat("{\"error\":{\"message\":", JsonString(CapStatusMessage(message)),
                      ",\"type\":\"", type, "\",\"param\":null,\"code\":\"", code, "\"}}");
}

}  // namespace http
}  // namespace brt
