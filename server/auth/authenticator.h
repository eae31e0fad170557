// Authenticator: turns a call's credentials into the Tenant it acts for (server/core/tenant.h). Both
// edges use it: the gRPC layer passes the `authorization` metadata and the verified client
// certificate's common name, the HTTP layer its Authorization header. It knows nothing of either.
//
// Rules, in order:
//   1. `authorization: Bearer KEY` given and a keys file configured: KEY must match it
//      (UNAUTHENTICATED otherwise) and names the tenant. Without a keys file the header is ignored (the
//      openai SDKs always send one).
//   2. Else a verified client certificate (mTLS): its common name is the tenant (it must be a valid
//      tenant name).
//   3. Else, with a keys file or mTLS configured: UNAUTHENTICATED ("send authorization: Bearer KEY").
//   4. Else (single-tenant mode): the unnamed tenant.
// Quotas: the keys file's max_sessions / max_calls for the tenant, else the defaults
// (--tenant_max_sessions, --tenant_max_calls; they apply to named tenants only).
//
// Thread safety: thread-safe. Resolve may run on many threads while Reload (SIGHUP) swaps the keys;
// a call sees the old or the new keys, never a mix.
#ifndef BRT_SERVER_AUTH_AUTHENTICATOR_H_
#define BRT_SERVER_AUTH_AUTHENTICATOR_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/auth/api_keys.h"
#include "server/core/tenant.h"

namespace brt::auth {

struct AuthOptions {
  std::string api_keys_file;  // "" = no keys
  bool mtls = false;          // TLS requires and verifies client certificates
  uint32_t default_max_sessions = 0;  // per named tenant; 0 = no quota
  uint32_t default_max_calls = 0;
};

class Authenticator {
 public:
  // Loads the keys file (its errors are returned).
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(AuthOptions options);

  // Re-reads the keys file; on error the current keys stay in force and the error is returned.
  // Returns the number of keys now loaded.
  absl::StatusOr<size_t> Reload();

  // The tenant a call acts for. authorization: the header's value ("Bearer KEY"), if sent;
  // certificate_name: the verified client certificate's common name, if any.
  absl::StatusOr<Tenant> Resolve(std::optional<std::string_view> authorization,
                                 std::optional<std::string_view> certificate_name) const;

  // True when credentials are required (keys file or mTLS).
  bool required() const { return !options_.api_keys_file.empty() || options_.mtls; }
  // The tenants named in the keys file (for bounded metric labels).
  std::vector<std::string> tenant_names() const;

 private:
  explicit Authenticator(AuthOptions options) : options_(std::move(options)) {}
  Tenant WithQuotas(std::string name, const ApiKeys& keys) const;

  const AuthOptions options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const ApiKeys> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace brt::auth

#endif  // BRT_SERVER_AUTH_AUTHENTICATOR_H_
