// Tenant: whom a call acts for, as an edge (gRPC, HTTP) resolved it from the call's credentials
// (server/auth/authenticator.h). Every session and stored snapshot belongs to one tenant, and a call
// sees only its own tenant's: another tenant's session id or snapshot key is NOT_FOUND, worded like an
// id that does not exist, so ids cannot be probed.
//
// The unnamed tenant (empty name) is single-tenant mode (no API keys, no mTLS): it owns the sessions
// created without credentials and sees the store's keys as they are. A named tenant's snapshots live
// in the store under "<name>-<key>" (StoreKey), so tenants never share a key.
//
// Quotas travel with the tenant: the edge fills them from the keys file or the --tenant_* flags, and
// the Engine enforces them under its lock.
//
// Thread safety: plain values and pure functions.
#ifndef BRT_SERVER_CORE_TENANT_H_
#define BRT_SERVER_CORE_TENANT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace brt {

struct Tenant {
  std::string name;  // "" = the unnamed tenant (single-tenant mode)
  // Sessions of this tenant loaded at once (created, forked or restored; a session restored
  // transparently on first use is not refused); 0 = no quota.
  uint32_t max_sessions = 0;
  // Active Score/Generate calls of this tenant; 0 = no quota.
  uint32_t max_calls = 0;
};

// Tenant names are 1..48 characters of [A-Za-z0-9_] (no '-', the store-key separator). OK or
// INVALID_ARGUMENT saying what is wrong.
absl::Status ValidateTenantName(std::string_view name);

// The snapshot store key under which `tenant` keeps `key` (a session id or snapshot key).
std::string StoreKey(const Tenant& tenant, std::string_view key);
// The tenant's own key for a store key, or nullopt when the store key is not the tenant's.
std::optional<std::string> TenantKey(const Tenant& tenant, std::string_view store_key);

}  // namespace brt

#endif  // BRT_SERVER_CORE_TENANT_H_
