// Engine: checkpoints at block boundaries, and rewinding or forking a session at an earlier position
// (see checkpoint_log.h for what a checkpoint holds and engine.h for the API).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/core/engine.h"
#include "server/core/engine_internal.h"

namespace brt {
namespace {

// Waits for the internal Score call that re-feeds a rewound session's tokens.
class RefeedSink final : public ScoreSink {
 public:
  void OnTokens(std::vector<TokenScoreResult>) override {}
  void OnInputReady() override {}
  void OnFinish(absl::StatusOr<ScoreSummaryResult> summary) override {
    status_ = summary.status();
    done_.Notify();
  }
  absl::Status Wait() {
    done_.WaitForNotification();
    return status_;
  }

 private:
  absl::Notification done_;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<SessionState>> Engine::FindIdleLocked(const std::string& id,
                                                                     const Tenant& tenant,
                                                                     const char* verb) const {
  if (draining_) return absl::UnavailableError("the server is shutting down");
  auto found = FindLocked(id, tenant);
  if (!found.ok()) return found.status();
  if ((*found)->job != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("session ", id,
                                                      " is busy with a Score or Generate call; ", verb,
                                                      " it when the call has ended"));
  }
  if ((*found)->damaged) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", id, " lost its memory when a model call failed; restore it from a snapshot"));
  }
  return found;
}

CheckpointLog Engine::NewCheckpointLog() const {
  CheckpointLog log(options_.checkpoints_per_session,
                    static_cast<int64_t>(options_.checkpoint_interval_blocks) * window_);
  if (log.enabled()) {
    static const auto* const kFresh = new std::shared_ptr<const Checkpoint>([] {
      auto c = std::make_shared<Checkpoint>();
      c->fresh = true;
      return c;
    }());
    log.Reset(*kFresh);
  }
  return log;
}

bool Engine::LogFedLocked(SessionState& s, int64_t from, const int32_t* ids, size_t n) {
  if (!s.checkpoints.enabled()) return false;
  s.checkpoints.Append(from, ids, n);
  const int64_t to = from + static_cast<int64_t>(n);
  return to % window_ == 0 && s.checkpoints.Due(to);
}

void Engine::TakeCheckpoints(const std::vector<std::shared_ptr<SessionState>>& sessions) {
  for (const auto& sp : sessions) {
    std::shared_ptr<Checkpoint> c = checkpoint_recycler_->NewCheckpoint();
    int32_t slot = -1;
    {
      absl::MutexLock lock(&mu_);
      SessionState& s = *sp;
      if (s.deleted || s.damaged || s.slot < 0 || !s.checkpoints.Due(s.fed)) continue;
      slot = s.slot;
      c->position = s.fed;
      c->next_logprobs = s.next_logprobs;
      c->recent = s.recent;
    }
    // Only this (executor) thread changes a session's memory, so the slot still holds position c.
    if (!backend_->ExportSlotInto(slot, &c->memory).ok()) continue;  // a backend without export: none
    absl::MutexLock lock(&mu_);
    if (!sp->deleted && sp->fed == c->position) sp->checkpoints.Add(std::move(c));
  }
}

absl::StatusOr<SessionInfo> Engine::RewindSession(const std::string& id, uint64_t position,
                                                  const Tenant& tenant) {
  if (position == 0) {
    return absl::InvalidArgumentError(
        "position must be >= 1 (1 = the start of the document, p = after its first p-1 tokens)");
  }
  absl::Status loaded = LoadIfStored(id, tenant);
  if (!loaded.ok()) return loaded;
  RefeedSink sink;
  bool refeed = false;
  absl::StatusOr<SessionInfo> out = absl::InternalError("not run");
  // On the executor, between model steps: restore the checkpoint, then queue the tokens after it as an
  // internal call that holds the session until they are fed.
  absl::Status ran = RunOnExecutor([&] {
    std::shared_ptr<SessionState> s;
    RewindPlan plan;
    {
      absl::MutexLock lock(&mu_);
      auto found = FindIdleLocked(id, tenant, "rewind");
      if (!found.ok()) {
        out = found.status();
        return;
      }
      s = *found;
      const uint64_t current = static_cast<uint64_t>(std::max<int64_t>(s->fed, 1));
      if (position > current) {
        out = absl::OutOfRangeError(absl::StrCat("position ", position, " is ahead of session ", id,
                                                 ", which is at position ", current));
        return;
      }
      if (position == current) {
        out = InfoLocked(*s);
        return;
      }
      // Position 1 is the fresh document (nothing fed, not even BOS).
      const int64_t target = position == 1 ? 0 : static_cast<int64_t>(position);
      auto planned = s->checkpoints.Plan(target);
      if (!planned.ok()) {
        out = planned.status();
        return;
      }
      plan = *std::move(planned);
    }
    absl::Status restored = absl::OkStatus();
    if (s->slot >= 0) {
      restored = plan.from->fresh ? backend_->InitSlots({s->slot})
                                  : backend_->ImportSlot(s->slot, plan.from->memory);
    }
    absl::MutexLock lock(&mu_);
    if (!restored.ok()) {
      s->damaged = true;
      out = restored;
      return;
    }
    s->fed = plan.from->position;
    s->next_logprobs = plan.from->next_logprobs;
    s->recent = plan.from->recent;
    s->autosaved_fed = std::min(s->autosaved_fed, s->fed);
    s->checkpoints.TruncateTo(s->fed);
    s->last_used_ms = NowMs();
    if (s->deleted) {
      out = absl::NotFoundError(absl::StrCat("session ", id, " was deleted during the rewind"));
      return;
    }
    if (!plan.tokens.empty()) {
      auto job = std::make_shared<Job>();
      job->kind = JobKind::kScore;
      job->score_sink = &sink;
      job->omit_tokens = true;
      job->input_closed = true;
      job->session = s;
      for (int32_t t : plan.tokens) s->pending.push_back(PendingToken{t, false, 0, 0});
      s->job = job;
      jobs_.push_back(job);
      refeed = true;
    }
    out = InfoLocked(*s);
  });
  if (!ran.ok()) return ran;
  if (!refeed || !out.ok()) return out;
  absl::Status fed = sink.Wait();
  if (!fed.ok()) {
    return absl::Status(fed.code(), absl::StrCat("the rewind of session ", id,
                                                 " stopped while re-reading the tokens after its "
                                                 "checkpoint: ", fed.message()));
  }
  return GetSession(id, tenant);
}

absl::StatusOr<SessionInfo> Engine::ForkSessionAt(const std::string& id, uint64_t position,
                                                  const Tenant& tenant) {
  {
    // Check the horizon before copying anything.
    absl::Status loaded = LoadIfStored(id, tenant);
    if (!loaded.ok()) return loaded;
    absl::MutexLock lock(&mu_);
    auto found = FindLocked(id, tenant);
    if (!found.ok()) return found.status();
    const SessionState& s = **found;
    const uint64_t current = static_cast<uint64_t>(std::max<int64_t>(s.fed, 1));
    if (position == 0 || position > current) {
      return absl::OutOfRangeError(absl::StrCat("position must be in [1, ", current,
                                                "] (session ", id, "'s position), got ", position));
    }
    if (position < current) {
      auto planned = s.checkpoints.Plan(position == 1 ? 0 : static_cast<int64_t>(position));
      if (!planned.ok()) return planned.status();
    }
  }
  auto child = ForkSession(id, tenant);
  if (!child.ok() || child->position == position) return child;
  auto rewound = RewindSession(child->id, position, tenant);
  if (!rewound.ok()) (void)DeleteSession(child->id, tenant);
  return rewound;
}

absl::StatusOr<std::vector<std::shared_ptr<const Checkpoint>>> Engine::CheckpointsOf(
    const std::string& id, int64_t max_fed, const Tenant& tenant) {
  absl::MutexLock lock(&mu_);
  auto found = FindLocked(id, tenant);
  if (!found.ok()) return found.status();
  return (*found)->checkpoints.AtOrBefore(max_fed);
}

absl::StatusOr<SessionInfo> Engine::CreateSessionFromCheckpoint(
    std::shared_ptr<const Checkpoint> checkpoint, const std::string& label, const Tenant& tenant) {
  if (checkpoint == nullptr || checkpoint->fresh) {
    return absl::InvalidArgumentError("a session can only start from a captured checkpoint");
  }
  auto s = std::make_shared<SessionState>();
  s->tenant = tenant.name;
  s->label = label;
  s->created_ms = s->last_used_ms = NowMs();
  s->fed = checkpoint->position;
  s->autosaved_fed = s->fed;
  s->next_logprobs = checkpoint->next_logprobs;
  s->recent = checkpoint->recent;
  s->checkpoints = NewCheckpointLog();
  s->checkpoints.Reset(checkpoint);
  int32_t slot = -1;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return absl::UnavailableError("the server is shutting down");
    absl::Status cap = sessions_.CheckCapacity();
    if (!cap.ok()) return cap;
    absl::Status quota = CheckTenantSessionsLocked(tenant);
    if (!quota.ok()) return quota;
    auto reserved = sessions_.ReserveSlot();
    if (!reserved.ok()) return reserved.status();
    slot = *reserved;
  }
  absl::Status imported = absl::InternalError("not run");
  absl::Status ran =
      RunOnExecutor([&] { imported = backend_->ImportSlot(slot, checkpoint->memory); });
  absl::ReleasableMutexLock lock(&mu_);
  if (!ran.ok() || !imported.ok()) {
    sessions_.ReleaseSlot(slot);
    return ran.ok() ? imported : ran;
  }
  s->slot = slot;
  absl::Status inserted = draining_ ? absl::UnavailableError("the server is shutting down")
                                    : sessions_.Insert(s, /*new_id=*/true);
  if (!inserted.ok()) {
    sessions_.ReleaseSlot(slot);
    return inserted;
  }
  RecordSessionsLocked();
  SessionInfo info = InfoLocked(*s);
  lock.Release();
  return LeaseNewSession(tenant, std::move(info));
}

}  // namespace brt
