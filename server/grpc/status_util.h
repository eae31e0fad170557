// The one place an absl::Status becomes a grpc::Status (codes share their numeric values), and the
// quoting of client input in error messages.
//
// A status message travels in the grpc-message trailer, and clients refuse metadata over their limit
// (8 KiB by default) with an error that hides the real one. So messages quote at most a short prefix
// of any client-supplied field (QuoteClientInput), and ToGrpcStatus cuts any message longer than
// kMaxStatusMessageBytes as a last line of defence.
//
// Thread safety: pure functions.
#ifndef BRT_SERVER_GRPC_STATUS_UTIL_H_
#define BRT_SERVER_GRPC_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace brt {

inline constexpr size_t kMaxQuotedInputBytes = 64;
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Converts the code and the message (cut to kMaxStatusMessageBytes, marked "... (truncated)").
grpc::Status ToGrpcStatus(const absl::Status& status);

// `input` itself when it has at most max_bytes bytes, else its first max_bytes bytes (not cutting a
// UTF-8 sequence) + "... (N bytes)".
std::string QuoteClientInput(std::string_view input, size_t max_bytes = kMaxQuotedInputBytes);

}  // namespace brt

#endif  // BRT_SERVER_GRPC_STATUS_UTIL_H_
