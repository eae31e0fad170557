// The one place an absl::Status becomes a grpc::Status (codes share their numeric values). The quoting
// of client input in error messages lives in server/core/client_text.h (shared with the HTTP edge).
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
#include "server/core/client_text.h"

namespace brt {

// Converts the code and the message (cut to kMaxStatusMessageBytes, marked "... (truncated)").
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace brt

#endif  // BRT_SERVER_GRPC_STATUS_UTIL_H_
