#include "server/grpc/status_util.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace brt {
namespace {

// The longest prefix of s of at most max_bytes bytes that does not end inside a UTF-8 sequence.
std::string_view Utf8Prefix(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  // Back off over continuation bytes (at most 3) to the start of the sequence that was cut.
  for (int k = 0; k < 3 && n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80; ++k) --n;
  return s.substr(0, n);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode use the same canonical numbering (0..16).
  int code = static_cast<int>(status.code());
  if (code < 0 || code > 16) code = static_cast<int>(grpc::StatusCode::UNKNOWN);
  const std::string_view message(status.message().data(), status.message().size());
  std::string text(Utf8Prefix(message, kMaxStatusMessageBytes));
  if (text.size() < message.size()) text += "... (truncated)";
  return grpc::Status(static_cast<grpc::StatusCode>(code), std::move(text));
}

std::string QuoteClientInput(std::string_view input, size_t max_bytes) {
  if (input.size() <= max_bytes) return std::string(input);
  return absl::StrCat(std::string(Utf8Prefix(input, max_bytes)), "... (", input.size(), " bytes)");
}

}  // namespace brt
