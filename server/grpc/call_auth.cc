#include "server/grpc/call_auth.h"

#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/core/client_text.h"

namespace brt {
namespace {

std::optional<std::string_view> Metadata(const grpc::ServerContextBase& ctx, const char* key) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(key);
  if (it == md.end()) return std::nullopt;
  return std::string_view(it->second.data(), it->second.size());
}

}  // namespace

absl::StatusOr<Tenant> TenantOfCall(const grpc::ServerContextBase& ctx,
                                    const auth::Authenticator* auth) {
  if (auth == nullptr) return Tenant{};
  std::optional<std::string> common_name;
  std::shared_ptr<const grpc::AuthContext> auth_context = ctx.auth_context();
  if (auth_context != nullptr && auth_context->IsPeerAuthenticated()) {
    // gRPC's SSL transport sets this property from the verified peer certificate's subject.
    std::vector<grpc::string_ref> names = auth_context->FindPropertyValues("x509_common_name");
    if (!names.empty()) common_name = std::string(names.front().data(), names.front().size());
  }
  return auth->Resolve(Metadata(ctx, "authorization"), common_name);
}

std::string SessionAffinityHeader(const grpc::ServerContextBase& ctx) {
  std::optional<std::string_view> routed = Metadata(ctx, kSessionAffinityHeader);
  return routed.has_value() ? std::string(*routed) : std::string();
}

absl::Status CheckSessionAffinity(const grpc::ServerContextBase& ctx, std::string_view session_id) {
  std::optional<std::string_view> routed = Metadata(ctx, kSessionAffinityHeader);
  if (!routed.has_value() || routed->empty() || session_id.empty() || *routed == session_id) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "the ", kSessionAffinityHeader, " metadata names session ", QuoteClientInput(*routed),
      " but the request is about ", QuoteClientInput(session_id),
      "; send the request's session id (a proxy routes the call by it) or no header"));
}

}  // namespace brt
