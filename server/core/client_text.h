// Client-supplied text inside error messages, shared by every edge (gRPC, HTTP): quoting a bounded
// prefix of untrusted input, and cutting an over-long message, never inside a UTF-8 sequence.
//
// Thread safety: pure functions.
#ifndef BRT_SERVER_CORE_CLIENT_TEXT_H_
#define BRT_SERVER_CORE_CLIENT_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace brt {

inline constexpr size_t kMaxQuotedInputBytes = 64;
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// The longest prefix of s of at most max_bytes bytes that does not end inside a UTF-8 sequence.
std::string_view Utf8Prefix(std::string_view s, size_t max_bytes);

// `input` itself when it has at most max_bytes bytes, else its first max_bytes bytes (not cutting a
// UTF-8 sequence) + "... (N bytes)".
std::string QuoteClientInput(std::string_view input, size_t max_bytes = kMaxQuotedInputBytes);

// `message` cut to kMaxStatusMessageBytes and marked "... (truncated)" when it was longer.
std::string CapStatusMessage(std::string_view message);

}  // namespace brt

#endif  // BRT_SERVER_CORE_CLIENT_TEXT_H_
