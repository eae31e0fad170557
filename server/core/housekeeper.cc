#include <algorithm>
#include <chrono>
#include <cstdio>

#include "server/core/engine.h"
#include "server/core/engine_internal.h"
#include "server/metrics/metrics.h"
#include "server/persistence/snapshot.h"

namespace brt {
namespace bp = persistence;

// The housekeeping thread: every housekeeping_interval_ms it autosaves sessions that advanced
// autosave_every_blocks blocks, and evicts idle sessions past the TTL or over the memory budget
// (snapshot first, then free the slot). It never calls the model itself: snapshots go through the
// executor (Capture).

// ---- eviction and autosave (the housekeeping thread)
// ---------------------------------------------------------

uint64_t Engine::evictions() const {
  absl::ReaderMutexLock lock(&mu_);
  return evictions_;
}

uint64_t Engine::autosaves() const {
  absl::ReaderMutexLock lock(&mu_);
  return autosaves_;
}

void Engine::HousekeepingLoop() {
  const int64_t autosave_tokens = int64_t{options_.autosave_every_blocks} * window_;
  const uint64_t per_session = std::max<uint64_t>(1, backend_->metadata().state_bytes);
  // Leases are renewed three times per lease period.
  const auto renew_every = std::chrono::milliseconds(std::max<int64_t>(1, options_.lease_ttl_ms / 3));
  auto renewed = std::chrono::steady_clock::now();
  while (true) {
    std::vector<std::pair<std::string, Tenant>> autosave;
    struct Eviction {
      std::string id;
      Tenant tenant;
      metrics::EvictionReason reason;
    };
    std::vector<Eviction> evict;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_housekeeping_),
                           absl::Milliseconds(options_.housekeeping_interval_ms));
      if (stop_housekeeping_) return;
      if (draining_) continue;
      const int64_t now = NowMs();
      sessions_.ForEach([&](const SessionState& s) {
        if (autosave_tokens > 0 && s.fed - s.autosaved_fed >= autosave_tokens) {
          autosave.emplace_back(s.id, Tenant{s.tenant});
        }
      });
      // (last use, id), least recently used first.
      const std::vector<std::pair<int64_t, std::string>> idle = sessions_.IdleByLastUse();
      uint64_t resident = sessions_.size() * per_session;
      for (const auto& [last_used, id] : idle) {
        const bool expired =
            options_.session_idle_ttl_ms > 0 && now - last_used >= options_.session_idle_ttl_ms;
        const bool over = options_.session_memory_budget_bytes > 0 &&
                          resident > options_.session_memory_budget_bytes;
        if (!expired && !over) break;  // the rest are more recent
        auto found = sessions_.Find(id);
        if (!found.ok()) continue;
        evict.push_back(Eviction{id, Tenant{(*found)->tenant},
                                 expired ? metrics::EvictionReason::kIdleTimeout
                                         : metrics::EvictionReason::kCapacity});
        resident -= per_session;
      }
    }
    if (leases() && std::chrono::steady_clock::now() - renewed >= renew_every) {
      renewed = std::chrono::steady_clock::now();
      RenewLeases();
    }
    for (const auto& [id, tenant] : autosave) Autosave(id, tenant);
    for (const Eviction& e : evict) Evict(e.id, e.tenant, e.reason);
  }
}

bool Engine::Autosave(const std::string& id, const Tenant& tenant) {
  absl::MutexLock order(&StoreLock(id));  // ordered with deletes (see StoreLock)
  const auto t0 = std::chrono::steady_clock::now();
  auto snap = Capture(id, tenant, /*allow_busy=*/true, /*at_resume_point=*/true);
  if (!snap.ok()) return false;  // deleted meanwhile, or no new resume point: nothing to save
  const std::string bytes = bp::EncodeSnapshot(*snap, options_.snapshot_hmac_key);
  absl::Status put = PutSnapshot(tenant, id, bytes);
  RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, put, bytes.size());
  if (!put.ok()) {
    std::fprintf(stderr, "brt-server: autosave of %s failed: %s\n", id.c_str(), put.ToString().c_str());
    return false;
  }
  absl::MutexLock lock(&mu_);
  auto found = sessions_.Find(id);
  if (found.ok()) (*found)->autosaved_fed = static_cast<int64_t>(snap->position);
  autosaves_++;
  return true;
}

bool Engine::Evict(const std::string& id, const Tenant& tenant, metrics::EvictionReason reason) {
  absl::MutexLock order(&StoreLock(id));  // ordered with deletes (see StoreLock)
  const auto t0 = std::chrono::steady_clock::now();
  auto snap = Capture(id, tenant, /*allow_busy=*/false);
  if (!snap.ok()) return false;  // busy again, or deleted: skipped, not a failure
  const std::string bytes = bp::EncodeSnapshot(*snap, options_.snapshot_hmac_key);
  absl::Status put = PutSnapshot(tenant, id, bytes);
  RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, put, bytes.size());
  if (!put.ok()) {
    std::fprintf(stderr, "brt-server: evicting %s failed (kept loaded): %s\n", id.c_str(),
                 put.ToString().c_str());
    return false;
  }
  absl::ReleasableMutexLock lock(&mu_);
  auto found = sessions_.Find(id);
  if (!found.ok()) return false;
  const SessionState& s = **found;
  // Free it only if nothing happened to it since the capture (else the stored copy is stale; the next
  // round tries again).
  if (s.job != nullptr || s.fed != static_cast<int64_t>(snap->position) ||
      s.last_used_ms != snap->metadata.last_used_unix_ms) {
    return false;
  }
  sessions_.Erase(id);
  RecordSessionsLocked();
  evictions_++;
  if (options_.metrics != nullptr) options_.metrics->AddSessionsEvicted(reason);
  lock.Release();
  ReleaseLease(tenant, id);
  return true;
}

}  // namespace brt
