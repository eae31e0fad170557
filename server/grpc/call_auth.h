// The gRPC side of tenants and session affinity: reads a call's credentials and routing metadata and
// hands them to the core's rules (server/auth/authenticator.h). Nothing else in server/grpc looks at
// metadata.
//
// Session affinity: clients send the id of the session a call is about as metadata `x-brt-session`
// (the `brt` CLI and the Python client do it themselves), so that a proxy in front of several replicas
// (deploy/nginx) can route every call of a session to the same replica. A call whose header names
// another session than its request would be routed by the wrong key, so it is refused.
//
// Thread safety: stateless functions.
#ifndef BRT_SERVER_GRPC_CALL_AUTH_H_
#define BRT_SERVER_GRPC_CALL_AUTH_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/auth/authenticator.h"
#include "server/core/tenant.h"

namespace brt {

inline constexpr char kSessionAffinityHeader[] = "x-brt-session";

// The tenant a call acts for: its `authorization` metadata and, over mTLS, the common name of its
// verified client certificate. auth == nullptr: the unnamed tenant. UNAUTHENTICATED otherwise as
// Authenticator::Resolve says.
absl::StatusOr<Tenant> TenantOfCall(const grpc::ServerContextBase& ctx,
                                    const auth::Authenticator* auth);

// The call's x-brt-session metadata ("" when absent): CreateSession's requested id.
std::string SessionAffinityHeader(const grpc::ServerContextBase& ctx);

// INVALID_ARGUMENT when the call's x-brt-session metadata is set and names another session than
// `session_id` (OK when either is empty).
absl::Status CheckSessionAffinity(const grpc::ServerContextBase& ctx, std::string_view session_id);

}  // namespace brt

#endif  // BRT_SERVER_GRPC_CALL_AUTH_H_
