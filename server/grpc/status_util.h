// The one place an absl::Status becomes a grpc::Status (codes share their numeric values).
#ifndef BRT_SERVER_GRPC_STATUS_UTIL_H_
#define BRT_SERVER_GRPC_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace brt {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace brt

#endif  // BRT_SERVER_GRPC_STATUS_UTIL_H_
