#include "server/grpc/status_util.h"

namespace brt {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode use the same canonical numbering (0..16).
  int code = static_cast<int>(status.code());
  if (code < 0 || code > 16) code = static_cast<int>(grpc::StatusCode::UNKNOWN);
  const std::string_view message(status.message().data(), status.message().size());
  return grpc::Status(static_cast<grpc::StatusCode>(code), CapStatusMessage(message));
}

}  // namespace brt
