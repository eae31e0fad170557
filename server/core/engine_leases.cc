// Engine: session leases between replicas that share a snapshot store (EngineOptions::replica_id).
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "server/core/engine.h"
#include "server/core/engine_internal.h"

namespace brt {

bool Engine::leases() const {
  return options_.snapshot_store != nullptr && options_.snapshot_store->has_leases() &&
         !options_.replica_id.empty();
}

absl::Status Engine::TakeLease(const Tenant& tenant, const std::string& id) {
  if (!leases()) return absl::OkStatus();
  std::string holder;
  auto taken = options_.snapshot_store->AcquireLease(StoreKey(tenant, id), options_.replica_id,
                                                     options_.lease_ttl_ms, &holder);
  if (!taken.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot take the lease on session ", id, ": ", taken.status().message()));
  }
  if (!*taken) {
    return absl::UnavailableError(absl::StrCat(
        "session ", id, " is live on replica ", holder,
        "; retry: the proxy routes its calls there, and if that replica is gone its lease expires within ",
        (options_.lease_ttl_ms + 999) / 1000, " s"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> Engine::LeaseNewSession(const Tenant& tenant, SessionInfo info) {
  absl::Status leased = TakeLease(tenant, info.id);
  if (leased.ok()) return info;
  absl::MutexLock lock(&mu_);
  sessions_.Erase(info.id);
  RecordSessionsLocked();
  return leased;
}

void Engine::ReleaseLease(const Tenant& tenant, const std::string& id) {
  if (!leases()) return;
  absl::Status released = options_.snapshot_store->ReleaseLease(StoreKey(tenant, id), options_.replica_id);
  if (!released.ok()) {
    std::fprintf(stderr, "brt-server: releasing the lease of %s failed: %s\n", id.c_str(),
                 released.ToString().c_str());
  }
}

absl::Status Engine::PutSnapshot(const Tenant& tenant, const std::string& id, const std::string& bytes) {
  if (!leases()) return options_.snapshot_store->Put(StoreKey(tenant, id), bytes);
  absl::Status put = options_.snapshot_store->PutLeased(StoreKey(tenant, id), bytes, options_.replica_id,
                                                        options_.lease_ttl_ms);
  if (absl::IsAborted(put)) DropLost(id, std::string(put.message()));
  return put;
}

void Engine::DropLost(const std::string& id, const std::string& why) {
  absl::MutexLock lock(&mu_);
  auto found = sessions_.Find(id);
  if (!found.ok()) return;
  SessionState& s = **found;
  if (s.job != nullptr && s.job->fail_status.ok()) {
    s.job->fail_status = absl::UnavailableError(absl::StrCat(
        "session ", id, " moved to another replica (", why, "); retry the call there"));
  }
  s.deleted = true;  // an active call ends at its next step
  sessions_.Erase(id);
  RecordSessionsLocked();
  std::fprintf(stderr, "brt-server: session %s dropped: %s\n", id.c_str(), why.c_str());
}

void Engine::RenewLeases() {
  if (!leases()) return;
  std::vector<std::pair<std::string, Tenant>> loaded;
  {
    absl::ReaderMutexLock lock(&mu_);
    sessions_.ForEach([&](const SessionState& s) { loaded.emplace_back(s.id, Tenant{s.tenant}); });
  }
  for (const auto& [id, tenant] : loaded) {
    std::string holder;
    auto renewed = options_.snapshot_store->AcquireLease(StoreKey(tenant, id), options_.replica_id,
                                                         options_.lease_ttl_ms, &holder);
    if (renewed.ok() && !*renewed) DropLost(id, absl::StrCat("replica ", holder, " holds its lease"));
    // A store error keeps the session: the lease may lapse, and a write then fails (fenced) if another
    // replica has taken it meanwhile.
  }
}

}  // namespace brt
