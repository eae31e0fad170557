// RpcRecord and AdmitCall: what every brt.v1.Brt handler (unary and streaming) does first and last. A
// call is admitted (authenticated, its x-brt-session checked) and, when it finishes, recorded in the
// metrics with its method, status code and tenant.
//
// Thread safety: an RpcRecord belongs to one call; set its tenant before the call can finish.
#ifndef BRT_SERVER_GRPC_CALL_RECORD_H_
#define BRT_SERVER_GRPC_CALL_RECORD_H_

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/auth/authenticator.h"
#include "server/core/tenant.h"
#include "server/grpc/call_auth.h"
#include "server/metrics/metrics.h"

namespace brt {

// Times one RPC from its handler's entry and records it when it finishes (nothing without metrics).
// Recorded just before Finish, so a client that has its status sees the call counted.
class RpcRecord {
 public:
  RpcRecord(metrics::Metrics* metrics, std::string_view method)
      : metrics_(metrics),
        method_(method),
        start_(metrics != nullptr ? std::chrono::steady_clock::now()
                                  : std::chrono::steady_clock::time_point()) {}

  void Finished(const grpc::Status& status) const {
    if (metrics_ == nullptr) return;
    metrics_->RecordRequest(
        method_, static_cast<int>(status.error_code()),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    metrics_->RecordTenantRequest(tenant_, static_cast<int>(status.error_code()));
  }
  // The tenant the call was authenticated as (brt_tenant_requests_total).
  void set_tenant(std::string tenant) { tenant_ = std::move(tenant); }

 private:
  metrics::Metrics* metrics_;
  std::string tenant_;
  std::string_view method_;  // a string literal
  std::chrono::steady_clock::time_point start_;
};


// Authenticates a call and checks its x-brt-session metadata against `session_id` (empty: not
// session-scoped): the tenant it acts for (recorded in `rpc`), or the error to finish with.
inline absl::StatusOr<Tenant> AdmitCall(const grpc::CallbackServerContext& ctx,
                                 const auth::Authenticator* auth, RpcRecord& rpc,
                                 std::string_view session_id) {
  absl::StatusOr<Tenant> tenant = TenantOfCall(ctx, auth);
  if (!tenant.ok()) return tenant;
  rpc.set_tenant(tenant->name);
  absl::Status routed = CheckSessionAffinity(ctx, session_id);
  if (!routed.ok()) return routed;
  return tenant;
}

}  // namespace brt

#endif  // BRT_SERVER_GRPC_CALL_RECORD_H_
