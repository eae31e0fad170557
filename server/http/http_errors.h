// The one place an absl::Status becomes an HTTP status code and an OpenAI-style error object:
//   {"error": {"message": ..., "type": ..., "param": null, "code": "<grpc code name>"}}
// The HTTP codes mirror the gRPC ones the same call would get (INVALID_ARGUMENT 400, NOT_FOUND 404,
// RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, ...), as grpc-gateway maps them.
//
// Thread safety: pure functions.
#ifndef BRT_SERVER_HTTP_HTTP_ERRORS_H_
#define BRT_SERVER_HTTP_HTTP_ERRORS_H_

#include <string>

#include "absl/status/status.h"

namespace brt {
namespace http {

int HttpStatusOf(absl::StatusCode code);

// The error object's JSON text (message capped like gRPC's, see server/core/client_text.h).
std::string ErrorJson(const absl::Status& status);

}  // namespace http
}  // namespace brt

#endif  // BRT_SERVER_HTTP_HTTP_ERRORS_H_
