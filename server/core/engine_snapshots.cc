#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/core/engine.h"
#include "server/core/engine_internal.h"
#include "server/core/sampling_codec.h"
#include "server/core/session_id.h"
#include "server/core/snapshot_checks.h"
#include "server/metrics/metrics.h"
#include "server/tokenizer/tokenizer.h"

namespace brt {

// ---- session persistence
// ----------------------------------------------------------------------------

namespace bp = persistence;

void RecordSnapshot(metrics::Metrics* m, metrics::SnapshotOp op,
                    std::chrono::steady_clock::time_point t0, const absl::Status& status,
                    uint64_t bytes) {
  if (m == nullptr) return;
  if (status.ok()) {
    m->ObserveSnapshot(op, SecondsSince(t0), bytes);
  } else {
    m->AddSnapshotFailure(op, status.code());
  }
}

namespace {

bp::DType DTypeCode(const std::string& dtype) {
  if (dtype == "bfloat16") return bp::DType::kBFloat16;
  if (dtype == "float16") return bp::DType::kFloat16;
  return bp::DType::kFloat32;
}

bp::TensorBlob ToBlob(std::string_view name, HostTensor t) {
  bp::TensorBlob b;
  b.name = std::string(name);
  b.dtype = DTypeCode(t.dtype);
  b.shape.assign(t.shape.begin(), t.shape.end());
  b.data = std::move(t.data);
  return b;
}

HostTensor FromBlob(const bp::TensorBlob& b) {
  HostTensor t;
  t.dtype = bp::DTypeName(b.dtype);
  t.shape.assign(b.shape.begin(), b.shape.end());
  t.data = b.data;
  return t;
}

}  // namespace

bp::ModelIdentity Engine::Identity() const {
  const ModelMetadata& m = backend_->metadata();
  bp::ModelIdentity id;
  id.fingerprint = m.fingerprint;
  id.tokenizer_sha256 = tokenizer_->sha256();
  id.dims.n_layers = m.n_layers;
  id.dims.n_heads = m.n_heads;
  id.dims.window = m.window;
  id.dims.head_dim = m.head_dim;
  id.dims.n_recurrent = m.n_recurrent;
  id.dims.n_state = m.n_state;
  id.dims.d_model = m.d_model;
  id.dims.vocab_size = m.vocab_size;
  id.dims.dtype = DTypeCode(m.dtype);
  return id;
}

absl::StatusOr<bp::SessionSnapshot> Engine::Capture(const std::string& id, const Tenant& tenant,
                                                    bool allow_busy, bool at_resume_point) {
  absl::Status loaded = LoadIfStoredOrdered(id, tenant);
  if (!loaded.ok()) return loaded;
  if (at_resume_point) {
    // A session whose client acknowledges is persisted from a checkpoint (host memory already: no
    // executor work), never beyond what the client can resume from.
    bp::SessionSnapshot snap;
    std::shared_ptr<const Checkpoint> newest;
    {
      absl::MutexLock lock(&mu_);
      auto found = FindLocked(id, tenant);
      if (!found.ok()) return found.status();
      const SessionState& s = **found;
      if (s.resume_point >= 0) {
        for (auto& c : s.checkpoints.AtOrBefore(s.resume_point)) newest = c;
        if (newest == nullptr || newest->position <= s.autosaved_fed) {
          return absl::FailedPreconditionError(absl::StrCat(
              "session ", id, " has no checkpoint at or before its resume point newer than its last "
              "autosave"));
        }
        snap.position = static_cast<uint64_t>(newest->position);
        snap.recent_tokens.assign(newest->recent.begin(), newest->recent.end());
        snap.metadata.session_id = s.id;
        snap.metadata.label = s.label;
        snap.metadata.created_unix_ms = s.created_ms;
        snap.metadata.last_used_unix_ms = s.last_used_ms;
        snap.metadata.default_sampling = EncodeSamplingOverrides(s.defaults);
      }
    }
    if (newest != nullptr) {
      return CompleteSnapshot(id, std::move(snap), newest->memory, newest->next_logprobs);
    }
  }
  bp::SessionSnapshot snap;
  std::vector<float> next_logprobs;
  absl::StatusOr<HostMemory> host = absl::InternalError("not run");
  // On the executor, between model steps: the slot's memory and the bookkeeping read here belong to
  // the same token boundary (memory changes in place, and only the executor changes it).
  absl::Status ran = RunOnExecutor([&] {
    int32_t slot = -1;
    bool fresh = false;
    {
      absl::MutexLock lock(&mu_);
      auto found = FindLocked(id, tenant);
      if (!found.ok()) {
        host = found.status();
        return;
      }
      SessionState& s = **found;
      if (s.job != nullptr && !allow_busy) {
        host = absl::FailedPreconditionError(absl::StrCat(
            "session ", id, " is busy with a Score or Generate call; save it when the call has ended"));
        return;
      }
      if (s.damaged) {
        host = absl::FailedPreconditionError(
            absl::StrCat("session ", id, " lost its memory when a model call failed; nothing to save"));
        return;
      }
      auto given = sessions_.EnsureSlot(s);  // a fresh session gets its (initial) memory now
      if (!given.ok()) {
        host = given.status();
        return;
      }
      fresh = *given;
      slot = s.slot;
      next_logprobs = s.next_logprobs;
      snap.position = static_cast<uint64_t>(s.fed);
      snap.recent_tokens.assign(s.recent.begin(), s.recent.end());
      snap.metadata.session_id = s.id;
      snap.metadata.label = s.label;
      snap.metadata.created_unix_ms = s.created_ms;
      snap.metadata.last_used_unix_ms = s.last_used_ms;
      snap.metadata.default_sampling = EncodeSamplingOverrides(s.defaults);
    }
    if (fresh) {
      absl::Status init = backend_->InitSlots({slot});
      if (!init.ok()) {
        host = init;
        return;
      }
    }
    host = backend_->ExportSlot(slot);
  });
  if (!ran.ok()) return ran;
  if (!host.ok()) return host.status();
  return CompleteSnapshot(id, std::move(snap), *std::move(host), next_logprobs);
}

absl::StatusOr<bp::SessionSnapshot> Engine::CompleteSnapshot(const std::string& id,
                                                            bp::SessionSnapshot snap, HostMemory host,
                                                            const std::vector<float>& next_logprobs) const {
  snap.model = Identity();
  // The sampler's generator lives per Generate call (seeded by SamplingParams.seed), so a session has no
  // RNG state between calls; pending tokens and an untokenized tail exist only during a call.
  snap.tensors.push_back(ToBlob(bp::kKvTensor, std::move(host.kv)));
  snap.tensors.push_back(ToBlob(bp::kStateTensor, std::move(host.state)));
  if (!next_logprobs.empty()) {
    bp::TensorBlob lp;
    lp.name = std::string(bp::kNextLogprobsTensor);
    lp.dtype = bp::DType::kFloat32;
    lp.shape = {next_logprobs.size()};
    lp.data.assign(reinterpret_cast<const char*>(next_logprobs.data()),
                   next_logprobs.size() * sizeof(float));
    snap.tensors.push_back(std::move(lp));
  }
  absl::Status valid = bp::ValidateSnapshot(snap);
  if (!valid.ok()) {
    return absl::InternalError(absl::StrCat("snapshot of ", id, " is inconsistent: ", valid.message()));
  }
  return snap;
}

absl::StatusOr<SavedSession> Engine::SaveAtResumePoint(const std::string& id, const Tenant& tenant) {
  const auto t0 = std::chrono::steady_clock::now();
  absl::MutexLock order(&StoreLock(id));
  auto snap = Capture(id, tenant, /*allow_busy=*/true, /*at_resume_point=*/true);
  SavedSession out;
  out.key = id;
  if (snap.ok()) {
    const std::string bytes = bp::EncodeSnapshot(*snap, options_.snapshot_hmac_key);
    absl::Status put = PutSnapshot(tenant, id, bytes);
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, put, bytes.size());
    if (!put.ok()) return put;
    out.size_bytes = bytes.size();
  } else if (!absl::IsFailedPrecondition(snap.status())) {
    return snap.status();
  }  // else nothing newer than the last autosave, which the store holds
  if (leases()) {
    {
      absl::MutexLock lock(&mu_);
      sessions_.Erase(id);
      RecordSessionsLocked();
    }
    ReleaseLease(tenant, id);
  }
  return out;
}

absl::StatusOr<SavedSession> Engine::SaveSession(const std::string& id, bool to_store,
                                                 bool return_bytes, const Tenant& tenant, bool unload) {
  if (to_store && options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  if (unload && !to_store) {
    return absl::InvalidArgumentError("unload needs to_store: an unloaded session lives in the store");
  }
  const auto t0 = std::chrono::steady_clock::now();
  // Ordered with deletes of the same id (see StoreLock).
  absl::MutexLock order(&StoreLock(id));
  auto snap = Capture(id, tenant);
  if (!snap.ok()) {
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, snap.status(), 0);
    return snap.status();
  }
  SavedSession out;
  std::string bytes = bp::EncodeSnapshot(*snap, options_.snapshot_hmac_key);
  out.size_bytes = bytes.size();
  if (to_store) {
    absl::Status put = PutSnapshot(tenant, id, bytes);
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, put, bytes.size());
    if (!put.ok()) return put;
    out.key = id;
    if (unload) {
      {
        absl::MutexLock lock(&mu_);
        auto found = FindLocked(id, tenant);
        if (found.ok()) {
          const SessionState& s = **found;
          if (s.job != nullptr || s.fed != static_cast<int64_t>(snap->position)) {
            return absl::FailedPreconditionError(absl::StrCat(
                "session ", id, " was saved, but a call started on it meanwhile, so it stays loaded"));
          }
          sessions_.Erase(id);
          RecordSessionsLocked();
        }
      }
      ReleaseLease(tenant, id);
    }
  } else {
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, absl::OkStatus(), bytes.size());
  }
  if (return_bytes) out.bytes = std::move(bytes);
  return out;
}

absl::StatusOr<SessionInfo> Engine::Install(bp::SessionSnapshot snap, bool new_id,
                                            const Tenant& tenant, bool check_quota) {
  // Client bytes are checked like a request before anything is installed (snapshot_checks.h).
  auto defaults = CheckSnapshotContent(snap, backend_->metadata().vocab_size, new_id);
  if (!defaults.ok()) return defaults.status();
  const bp::TensorBlob* kv = snap.FindTensor(bp::kKvTensor);
  const bp::TensorBlob* state = snap.FindTensor(bp::kStateTensor);
  const bp::TensorBlob* lp = snap.FindTensor(bp::kNextLogprobsTensor);

  HostMemory host;
  host.kv = FromBlob(*kv);
  host.state = FromBlob(*state);

  auto s = std::make_shared<SessionState>();
  s->tenant = tenant.name;
  s->label = snap.metadata.label;
  s->defaults = *std::move(defaults);
  s->created_ms = snap.metadata.created_unix_ms;
  s->last_used_ms = NowMs();
  if (lp != nullptr) {
    s->next_logprobs.resize(lp->data.size() / sizeof(float));
    std::memcpy(s->next_logprobs.data(), lp->data.data(), lp->data.size());
  }
  s->fed = static_cast<int64_t>(snap.position);
  s->autosaved_fed = s->fed;
  s->recent.assign(snap.recent_tokens.begin(), snap.recent_tokens.end());
  s->id = new_id ? std::string() : snap.metadata.session_id;
  // Reserve a slot, fill it on the executor, then publish the session (or give the slot back).
  int32_t slot = -1;
  {
    absl::MutexLock lock(&mu_);
    if (!new_id && sessions_.Contains(s->id)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "session ", s->id, " is already loaded; delete it first or restore with new_id"));
    }
  }
  // Under its own id the session must be ours among replicas before it goes live here; a failure from
  // here on gives the lease back.
  if (!new_id) {
    absl::Status leased = TakeLease(tenant, s->id);
    if (!leased.ok()) return leased;
  }
  auto fail = [&](absl::Status status) {
    if (!new_id) ReleaseLease(tenant, s->id);
    return status;
  };
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return fail(absl::UnavailableError("the server is shutting down"));
    absl::Status cap = sessions_.CheckCapacity();
    if (!cap.ok()) return fail(cap);
    if (check_quota) {
      absl::Status quota = CheckTenantSessionsLocked(tenant);
      if (!quota.ok()) return fail(quota);
    }
    if (!new_id && sessions_.Contains(s->id)) {  // another caller restored it meanwhile
      return absl::AlreadyExistsError(absl::StrCat(
          "session ", s->id, " is already loaded; delete it first or restore with new_id"));
    }
    auto reserved = sessions_.ReserveSlot();
    if (!reserved.ok()) return fail(reserved.status());
    slot = *reserved;
  }
  absl::Status imported = absl::InternalError("not run");
  absl::Status ran = RunOnExecutor([&] { imported = backend_->ImportSlot(slot, host); });
  if (ran.ok() && imported.ok()) {
    s->slot = slot;
    // The restored memory is the session's first checkpoint: it can be rewound back to here.
    s->checkpoints = NewCheckpointLog();
    if (s->checkpoints.enabled()) {
      auto c = std::make_shared<Checkpoint>();
      c->position = s->fed;
      c->memory = std::move(host);
      c->next_logprobs = s->next_logprobs;
      c->recent = s->recent;
      s->checkpoints.Reset(std::move(c));
    }
    absl::ReleasableMutexLock lock(&mu_);
    absl::Status inserted = draining_ ? absl::UnavailableError("the server is shutting down")
                                      : sessions_.Insert(s, new_id);
    if (!inserted.ok()) {
      sessions_.ReleaseSlot(slot);
      lock.Release();
      return absl::IsAlreadyExists(inserted) ? inserted : fail(inserted);
    }
    RecordSessionsLocked();
    SessionInfo info = InfoLocked(*s);
    lock.Release();
    if (new_id) return LeaseNewSession(tenant, std::move(info));  // a fresh id: its lease is free
    return info;
  }
  {
    absl::MutexLock lock(&mu_);
    sessions_.ReleaseSlot(slot);
  }
  if (!ran.ok()) return fail(ran);
  if (absl::IsInvalidArgument(imported)) {
    return fail(absl::FailedPreconditionError(absl::StrCat("snapshot refused: ", imported.message())));
  }
  return fail(imported);
}

absl::StatusOr<SessionInfo> Engine::RestoreSession(std::string_view bytes, bool new_id,
                                                   const Tenant& tenant) {
  return RestoreBytes(bytes, new_id, std::chrono::steady_clock::now(), tenant,
                      /*check_quota=*/true);
}

absl::StatusOr<SessionInfo> Engine::RestoreBytes(std::string_view bytes, bool new_id,
                                                 std::chrono::steady_clock::time_point t0,
                                                 const Tenant& tenant, bool check_quota) {
  bp::DecodeOptions decode;
  decode.expected = Identity();
  decode.hmac_key = options_.snapshot_hmac_key;
  auto snap = bp::DecodeSnapshot(bytes, decode);
  absl::StatusOr<SessionInfo> info =
      snap.ok() ? Install(*std::move(snap), new_id, tenant, check_quota)
                : absl::StatusOr<SessionInfo>(snap.status());
  RecordSnapshot(options_.metrics, metrics::SnapshotOp::kRestore, t0, info.status(), bytes.size());
  return info;
}

absl::StatusOr<SessionInfo> Engine::RestoreSessionFromStore(const std::string& key, bool new_id,
                                                            const Tenant& tenant) {
  if (options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  absl::Status valid = bp::ValidateSnapshotKey(key);
  if (!valid.ok()) return valid;
  const auto t0 = std::chrono::steady_clock::now();
  auto bytes = options_.snapshot_store->Get(StoreKey(tenant, key));
  if (!bytes.ok()) {
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kRestore, t0, bytes.status(), 0);
    if (absl::IsNotFound(bytes.status())) {  // worded by the tenant's key, not the store's
      return absl::NotFoundError(absl::StrCat("no snapshot ", key, " in the store"));
    }
    return bytes.status();
  }
  return RestoreBytes(*bytes, new_id, t0, tenant, /*check_quota=*/true);
}

bool Engine::NeedsStoreRead(const std::string& id) const {
  if (options_.snapshot_store == nullptr || !LooksLikeSessionId(id)) return false;
  absl::ReaderMutexLock lock(&mu_);
  return !sessions_.Contains(id);
}

absl::Status Engine::LoadIfStored(const std::string& id, const Tenant& tenant) {
  if (options_.snapshot_store == nullptr || !LooksLikeSessionId(id)) return absl::OkStatus();
  {
    // Loaded here: nothing to restore. Checked before the store lock, which is striped: another id's
    // restore on the same stripe may be waiting on a hung store, and a loaded session must not wait
    // behind it. (A delete racing this check is as if it came just after the call.)
    absl::ReaderMutexLock lock(&mu_);
    if (sessions_.Contains(id)) return absl::OkStatus();
  }
  absl::MutexLock order(&StoreLock(id));  // a delete of this id is not undone by this restore
  return LoadIfStoredOrdered(id, tenant);
}

absl::Status Engine::LoadIfStoredOrdered(const std::string& id, const Tenant& tenant) {
  if (options_.snapshot_store == nullptr || !LooksLikeSessionId(id)) return absl::OkStatus();
  {
    absl::ReaderMutexLock lock(&mu_);
    if (sessions_.Contains(id)) return absl::OkStatus();
    // Not NOT_FOUND: the session may well exist, in the store or on another replica.
    if (draining_) return absl::UnavailableError("the server is shutting down");
  }
  const auto t0 = std::chrono::steady_clock::now();
  // The lease first, so that what is read is the last holder's final write.
  absl::Status leased = TakeLease(tenant, id);
  if (!leased.ok()) return leased;
  auto bytes = options_.snapshot_store->Get(StoreKey(tenant, id));
  if (absl::IsNotFound(bytes.status())) {
    ReleaseLease(tenant, id);
    return absl::OkStatus();  // the caller reports NOT_FOUND
  }
  if (!bytes.ok()) {
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kRestore, t0, bytes.status(), 0);
    return bytes.status();
  }
  auto restored = RestoreBytes(*bytes, /*new_id=*/false, t0, tenant, /*check_quota=*/false);
  if (absl::IsAlreadyExists(restored.status())) return absl::OkStatus();  // another caller won
  if (!restored.ok()) {
    return absl::Status(restored.status().code(),
                        absl::StrCat("restoring session ", id, " from the snapshot store: ",
                                     restored.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> Engine::ForkSession(const std::string& id, const Tenant& tenant) {
  absl::Status loaded = LoadIfStored(id, tenant);
  if (!loaded.ok()) return loaded;
  absl::StatusOr<SessionInfo> out = absl::InternalError("not run");
  // On the executor: the child's slot is a copy of the parent's at this token boundary.
  absl::Status ran = RunOnExecutor([&] {
    int32_t from = -1, to = -1;
    std::shared_ptr<SessionState> child;
    {
      absl::MutexLock lock(&mu_);
      auto found = FindIdleLocked(id, tenant, "fork");
      if (!found.ok()) {
        out = found.status();
        return;
      }
      const SessionState& parent = **found;
      absl::Status cap = sessions_.CheckCapacity();
      if (cap.ok()) cap = CheckTenantSessionsLocked(tenant);
      if (!cap.ok()) {
        out = cap;
        return;
      }
      child = std::make_shared<SessionState>();
      child->tenant = parent.tenant;
      child->label = parent.label;
      child->defaults = parent.defaults;
      child->created_ms = child->last_used_ms = NowMs();
      child->next_logprobs = parent.next_logprobs;
      child->fed = parent.fed;
      child->recent = parent.recent;
      child->checkpoints = parent.checkpoints;  // checkpoints are immutable and shared
      from = parent.slot;
      if (from >= 0) {  // a fresh parent has no slot: neither does the child
        auto slot = sessions_.ReserveSlot();
        if (!slot.ok()) {
          out = slot.status();
          return;
        }
        to = *slot;
      }
    }
    absl::Status copied = from >= 0 ? backend_->CopySlot(from, to) : absl::OkStatus();
    absl::MutexLock lock(&mu_);
    if (!copied.ok()) {
      sessions_.ReleaseSlot(to);
      out = copied;
      return;
    }
    child->slot = to;
    absl::Status inserted = sessions_.Insert(child, /*new_id=*/true);
    if (!inserted.ok()) {
      sessions_.ReleaseSlot(to);
      out = inserted;
      return;
    }
    RecordSessionsLocked();
    out = InfoLocked(*child);
  });
  if (!ran.ok()) return ran;
  if (!out.ok()) return out;
  return LeaseNewSession(tenant, *std::move(out));  // the child's fresh id
}

absl::StatusOr<std::vector<std::string>> Engine::ListSnapshots(const Tenant& tenant) {
  if (options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  auto keys = options_.snapshot_store->List();
  if (!keys.ok() || tenant.name.empty()) return keys;
  std::vector<std::string> own;
  for (const std::string& k : *keys) {
    if (auto mine = TenantKey(tenant, k)) own.push_back(*std::move(mine));
  }
  return own;
}

absl::Status Engine::DeleteSnapshot(const std::string& key, const Tenant& tenant) {
  if (options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  absl::Status valid = bp::ValidateSnapshotKey(key);
  if (!valid.ok()) return valid;
  absl::MutexLock order(&StoreLock(key));
  absl::Status deleted = options_.snapshot_store->Delete(StoreKey(tenant, key));
  if (absl::IsNotFound(deleted)) {
    return absl::NotFoundError(absl::StrCat("no snapshot ", key, " in the store"));
  }
  return deleted;
}

void Engine::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  for (const auto& job : jobs_) {
    job->engine_cancelled = true;
    if (job->fail_status.ok()) job->fail_status = absl::UnavailableError("the server is shutting down");
  }
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return jobs_.empty() || stop_; };
  mu_.Await(absl::Condition(&idle));
}

absl::StatusOr<size_t> Engine::SaveAllSessions() {
  if (options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  std::vector<std::pair<std::string, Tenant>> ids;
  {
    absl::ReaderMutexLock lock(&mu_);
    sessions_.ForEach([&](const SessionState& s) { ids.emplace_back(s.id, Tenant{s.tenant}); });
  }
  absl::Status first;
  size_t saved = 0;
  for (const auto& [id, tenant] : ids) {
    bool resumable = false;
    {
      absl::ReaderMutexLock lock(&mu_);
      auto found = FindLocked(id, tenant);
      resumable = found.ok() && (*found)->resume_point >= 0;
    }
    // Unloaded as it is saved: its lease is given up, so another replica can take it over at once.
    auto r = resumable ? SaveAtResumePoint(id, tenant)
                       : SaveSession(id, /*to_store=*/true, /*return_bytes=*/false, tenant,
                                     /*unload=*/leases());
    if (r.ok()) {
      saved++;
    } else if (first.ok()) {
      first = r.status();
    }
  }
  if (!first.ok()) return first;
  return saved;
}

}  // namespace brt
