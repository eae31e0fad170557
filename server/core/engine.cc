#include "server/core/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "server/core/client_text.h"
#include "server/core/engine_internal.h"
#include "server/core/session_id.h"
#include "server/metrics/metrics.h"
#include "server/thread_name.h"

namespace brt {
namespace {

// INVALID_ARGUMENT naming the first id outside [0, vocab_size) and where it is.
absl::Status CheckTokenIds(const std::vector<int32_t>& ids, int32_t vocab_size,
                           const char* field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] is ", ids[i],
                                                     "; token ids must be in [0, ", vocab_size,
                                                     ") for this model's vocabulary"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---- calls
// ------------------------------------------------------------------------------------------

absl::StatusOr<bool> ScoreCall::Append(std::string_view chunk) {
  return engine_->Append(job_.get(), chunk);
}
absl::StatusOr<bool> ScoreCall::AppendTokens(const std::vector<int32_t>& ids) {
  return engine_->AppendTokens(job_.get(), ids);
}
absl::Status ScoreCall::CloseInput() { return engine_->CloseInput(job_.get()); }
void ScoreCall::Cancel() { engine_->Cancel(job_.get()); }
void ScoreCall::Ack(uint64_t position) { engine_->Ack(job_.get(), position); }
void GenerateCall::Cancel() { engine_->Cancel(job_.get()); }

// ---- construction
// -----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineOptions options,
                                                       std::unique_ptr<ModelBackend> backend,
                                                       std::shared_ptr<const Tokenizer> tokenizer) {
  if (backend == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("Engine needs a backend and a tokenizer");
  }
  const ModelMetadata& meta = backend->metadata();
  if (tokenizer->vocab_size() > meta.vocab_size) {
    return absl::FailedPreconditionError(
        absl::StrCat("tokenizer vocabulary (", tokenizer->vocab_size(),
                     ") is larger than the model's (", meta.vocab_size, ")"));
  }
  if (options.max_batch_size == 0 || options.max_queue == 0 || options.max_sessions == 0 ||
      options.max_decode_batch == 0 || options.max_blocks_per_call == 0) {
    return absl::InvalidArgumentError(
        "max_batch_size, max_queue, max_sessions, max_decode_batch, max_blocks_per_call must be > "
        "0");
  }
  if (options.max_pending_tokens == 0) options.max_pending_tokens = 32 * meta.window;
  if (options.default_max_tokens > options.max_tokens_cap) {
    options.default_max_tokens = options.max_tokens_cap;
  }
  return std::unique_ptr<Engine>(
      new Engine(std::move(options), std::move(backend), std::move(tokenizer)));
}

Engine::Engine(EngineOptions options, std::unique_ptr<ModelBackend> backend,
               std::shared_ptr<const Tokenizer> tokenizer)
    : options_(std::move(options)),
      backend_(std::move(backend)),
      tokenizer_(std::move(tokenizer)),
      window_(backend_->metadata().window),
      sessions_(options_.max_sessions),
      planner_(PlannerOptions{window_, options_.max_batch_size, options_.max_decode_batch,
                              options_.max_blocks_per_call,
                              options_.feed_spans && backend_->SupportsSpans(),
                              options_.max_block_ends_per_step,
                              options_.decode_rows_per_block_end,
                              options_.chunked_prefill_tokens}),
      checkpoint_recycler_(CheckpointRecycler::Create(options_.checkpoint_recycle_bytes)),
      deliverer_(/*inline_below=*/4) {
  if (metrics::Metrics* m = options_.metrics) {
    m->SetQueueCapacity(options_.max_queue);
    m->SetSessionsCapacity(options_.max_sessions);
    m->SetQueueDepth(0);
    m->SetSessionsResident(0);
    m->SetStateBytes(metrics::StateLocation::kDevice, 0);
  }
  if (options_.checkpoints_per_session > 0 && options_.checkpoint_prefill_bytes > 0) {
    const ModelBackend::ExportSize size = backend_->ExportBytes();
    checkpoint_recycler_->Prefill(options_.checkpoint_prefill_bytes, size.kv, size.state);
  }
  executor_ = std::thread([this] {
    NameThisThread("brt-executor");
    ExecutorLoop();
  });
  if (options_.snapshot_store != nullptr &&
      (options_.session_idle_ttl_ms > 0 || options_.session_memory_budget_bytes > 0 ||
       options_.autosave_every_blocks > 0 || leases())) {
    housekeeper_ = std::thread([this] {
      NameThisThread("brt-housekeep");
      HousekeepingLoop();
    });
  }
}

Engine::~Engine() {
  {
    absl::MutexLock lock(&mu_);
    stop_housekeeping_ = true;  // first: it may wait on the executor
  }
  if (housekeeper_.joinable()) housekeeper_.join();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  executor_.join();
}

int64_t Engine::NowMs() const {
  if (options_.now_ms) return options_.now_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- sessions
// ---------------------------------------------------------------------------------------

SessionInfo Engine::InfoLocked(const SessionState& s) const {
  SessionInfo info;
  info.id = s.id;
  info.label = s.label;
  info.tokens_consumed = s.fed > 0 ? static_cast<uint64_t>(s.fed - 1) : 0;
  info.position = info.tokens_consumed + 1;
  info.block_offset = static_cast<uint32_t>(info.position % window_);
  info.state_bytes = backend_->metadata().state_bytes;
  info.device = backend_->metadata().device;
  info.created_unix_ms = s.created_ms;
  info.last_used_unix_ms = s.last_used_ms;
  info.default_sampling = s.defaults;
  info.busy = s.job != nullptr;
  const int64_t earliest = s.checkpoints.earliest();
  info.earliest_rewind_position = earliest < 0 ? 0 : static_cast<uint64_t>(std::max<int64_t>(earliest, 1));
  return info;
}

absl::StatusOr<std::shared_ptr<SessionState>> Engine::FindLocked(const std::string& id,
                                                                 const Tenant& tenant) const {
  return sessions_.FindFor(id, tenant.name);
}

absl::Status Engine::CheckTenantSessionsLocked(const Tenant& tenant) const {
  if (tenant.max_sessions == 0 || sessions_.CountOf(tenant.name) < tenant.max_sessions) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "tenant ", tenant.name, " holds ", tenant.max_sessions,
      " sessions, its quota (max_sessions in the keys file, or --tenant_max_sessions); delete one "
      "first"));
}

absl::StatusOr<SessionInfo> Engine::CreateSession(const std::string& label,
                                                  const SamplingOverrides& default_sampling,
                                                  const Tenant& tenant,
                                                  const std::string& requested_id) {
  if (!requested_id.empty()) {
    if (!LooksLikeSessionId(requested_id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a requested session id must be \"s_\" and 32 lowercase hex digits (128 random bits), got ",
          QuoteClientInput(requested_id)));
    }
    // An evicted or stored session under that id is loaded, so the insert below sees it taken.
    absl::Status loaded = LoadIfStored(requested_id, tenant);
    if (!loaded.ok()) return loaded;
  }
  if (label.size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("label must be at most 256 bytes, got ", label.size()));
  }
  absl::Status valid =
      ValidateSampling(default_sampling, backend_->metadata().vocab_size, "default_sampling.");
  if (!valid.ok()) return valid;
  auto s = std::make_shared<SessionState>();
  s->checkpoints = NewCheckpointLog();
  s->id = requested_id;
  s->tenant = tenant.name;
  s->label = label;
  s->defaults = default_sampling;
  s->created_ms = s->last_used_ms = NowMs();
  SessionInfo info;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return absl::UnavailableError("the server is shutting down");
    absl::Status quota = CheckTenantSessionsLocked(tenant);
    if (!quota.ok()) return quota;
    absl::Status inserted = sessions_.Insert(s, /*new_id=*/requested_id.empty());
    if (!inserted.ok()) return inserted;
    RecordSessionsLocked();
    info = InfoLocked(*s);
  }
  return LeaseNewSession(tenant, std::move(info));
}

absl::StatusOr<SessionInfo> Engine::GetSession(const std::string& id, const Tenant& tenant) {
  absl::Status loaded = LoadIfStored(id, tenant);
  if (!loaded.ok()) return loaded;
  absl::ReaderMutexLock lock(&mu_);
  auto s = FindLocked(id, tenant);
  if (!s.ok()) return s.status();
  return InfoLocked(**s);
}

std::vector<SessionInfo> Engine::ListSessions(const Tenant& tenant) const {
  std::vector<SessionInfo> out;
  {
    absl::ReaderMutexLock lock(&mu_);
    sessions_.ForEach([&](const SessionState& s) {
      mu_.AssertReaderHeld();  // For the analysis: the lambda runs under the lock taken above.
      if (s.tenant == tenant.name) out.push_back(InfoLocked(s));
    });
  }
  std::sort(out.begin(), out.end(), [](const SessionInfo& a, const SessionInfo& b) {
    return a.created_unix_ms < b.created_unix_ms ||
           (a.created_unix_ms == b.created_unix_ms && a.id < b.id);
  });
  return out;
}

absl::Mutex& Engine::StoreLock(const std::string& id) const {
  return store_locks_[std::hash<std::string>()(id) % store_locks_.size()];
}

absl::Status Engine::DeleteSession(const std::string& id, const Tenant& tenant) {
  // The session is gone everywhere: its stored snapshot too (else the next use would restore it).
  // Under the id's store lock: a save or restore of it in flight finishes first, and none starts
  // until the session has left the table.
  absl::MutexLock order(&StoreLock(id));
  absl::Status stored = absl::NotFoundError("");
  if (options_.snapshot_store != nullptr && LooksLikeSessionId(id)) {
    stored = options_.snapshot_store->Delete(StoreKey(tenant, id));
  }
  {
    absl::MutexLock lock(&mu_);
    auto s = FindLocked(id, tenant);
    if (!s.ok()) return stored.ok() ? absl::OkStatus() : s.status();
    (*s)->deleted = true;  // an active call ends at its next step (the executor sees it)
    sessions_.Erase(id);  // frees its slot; the executor reinitialises a slot before reusing it
    RecordSessionsLocked();
  }
  ReleaseLease(tenant, id);
  return absl::OkStatus();
}

uint32_t Engine::active_calls() const {
  absl::ReaderMutexLock lock(&mu_);
  return static_cast<uint32_t>(jobs_.size());
}

uint32_t Engine::session_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return static_cast<uint32_t>(sessions_.size());
}

// ---- metrics (each a no-op when EngineOptions::metrics is null)
// ------------------------------------

void Engine::RecordSessionsLocked() const {
  metrics::Metrics* m = options_.metrics;
  if (m == nullptr) return;
  m->SetSessionsResident(static_cast<int64_t>(sessions_.size()));
  m->SetStateBytes(metrics::StateLocation::kDevice,
                   sessions_.size() * backend_->metadata().state_bytes);
}

void Engine::RecordAdmittedLocked(Job& job) const {
  metrics::Metrics* m = options_.metrics;
  if (m == nullptr) return;
  job.admitted = absl::Now();
  m->SetQueueDepth(static_cast<int64_t>(jobs_.size()));
}

void Engine::RecordStartedLocked(Job& job, absl::Time now) const {
  if (job.started || options_.metrics == nullptr) return;
  job.started = true;
  options_.metrics->ObserveQueueWait(absl::ToDoubleSeconds(now - job.admitted));
}

// ---- starting calls
// ---------------------------------------------------------------------------------

absl::Status Engine::AdmitLocked(const SessionState& s, const Tenant& tenant) const {
  if (draining_) return absl::UnavailableError("the server is shutting down");
  if (tenant.max_calls > 0) {
    uint32_t calls = 0;
    for (const auto& job : jobs_) calls += job->session->tenant == tenant.name ? 1 : 0;
    if (calls >= tenant.max_calls) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "tenant ", tenant.name, " has ", tenant.max_calls,
          " Score/Generate calls running, its quota (max_calls in the keys file, or "
          "--tenant_max_calls); retry when one has ended"));
    }
  }
  if (s.damaged) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", s.id, " lost its memory when a model call failed; restore it from a snapshot "
        "(RestoreSession) or delete it"));
  }
  if (s.job != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", s.id, " is busy with another Score or Generate call"));
  }
  if (jobs_.size() >= options_.max_queue) {
    return absl::UnavailableError(absl::StrCat("the scheduler queue is full (", options_.max_queue,
                                               " active calls, --max_queue); retry later"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ScoreCall>> Engine::StartScore(const std::string& session_id,
                                                              const ScoreOptions& options,
                                                              ScoreSink* sink,
                                                              const Tenant& tenant) {
  if (options.top_k < 0 || options.top_k > static_cast<int32_t>(options_.max_top_k)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be in [0, ", options_.max_top_k, "], got ", options.top_k));
  }
  auto job = std::make_shared<Job>();
  job->kind = JobKind::kScore;
  job->deadline = options.deadline;
  job->score_sink = sink;
  job->top_k = options.top_k;
  job->omit_tokens = options.omit_tokens;
  job->inc.emplace(tokenizer_.get(), options_.max_line_bytes);
  job->idle_deadline = IdleDeadline();
  absl::Status loaded = LoadIfStored(session_id, tenant);
  if (!loaded.ok()) return loaded;
  absl::MutexLock lock(&mu_);
  auto s = FindLocked(session_id, tenant);
  if (!s.ok()) return s.status();
  absl::Status admit = AdmitLocked(**s, tenant);
  if (!admit.ok()) return admit;
  job->session = *s;
  (*s)->resume_point = -1;  // until this call acknowledges (ScoreCall::Ack)
  if ((*s)->fed == 0 && (*s)->pending.empty()) {
    (*s)->pending.push_back(PendingToken{backend_->metadata().bos_id, false, 0, 0});
  }
  (*s)->job = job;
  jobs_.push_back(job);
  RecordAdmittedLocked(*job);
  return std::unique_ptr<ScoreCall>(new ScoreCall(this, job));
}

absl::StatusOr<std::unique_ptr<GenerateCall>> Engine::StartGenerate(const std::string& session_id,
                                                                    GenerateParams params,
                                                                    GenerateSink* sink,
                                                                    const Tenant& tenant) {
  if (session_id.empty()) return absl::InvalidArgumentError("session_id is required");
  if (params.prompt.size() > options_.max_chunk_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("prompt is ", params.prompt.size(), " bytes; the limit is ",
                     options_.max_chunk_bytes, " (--max_chunk_bytes)"));
  }
  uint32_t max_tokens = params.max_tokens.value_or(options_.default_max_tokens);
  if (max_tokens > options_.max_tokens_cap) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be in [0, ", options_.max_tokens_cap, "], got ", max_tokens));
  }
  if (max_tokens == 0 && params.prompt.empty()) {
    return absl::InvalidArgumentError(
        "empty request: max_tokens is 0 and there is no prompt (give max_tokens in [1, " +
        std::to_string(options_.max_tokens_cap) + "] or a prompt)");
  }
  absl::Status valid =
      ValidateSampling(params.sampling, backend_->metadata().vocab_size, "sampling.");
  if (!valid.ok()) return valid;
  if (params.top_logprobs > options_.max_top_k) {
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs must be in [0, ", options_.max_top_k,
                                                   "] (--max_top_k), got ", params.top_logprobs));
  }
  absl::StatusOr<std::vector<TokenSpan>> prompt;
  if (params.prompt_tokens.has_value()) {
    if (!params.prompt.empty()) {
      return absl::InvalidArgumentError("give the prompt as text or as token ids, not both");
    }
    if (params.prompt_tokens->size() > options_.max_chunk_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("prompt is ", params.prompt_tokens->size(), " tokens; the limit is ",
                       options_.max_chunk_bytes, " (--max_chunk_bytes)"));
    }
    absl::Status ids = CheckTokenIds(*params.prompt_tokens, tokenizer_->vocab_size(), "prompt");
    if (!ids.ok()) return ids;
    prompt.emplace();
    for (int32_t id : *params.prompt_tokens) prompt->push_back(TokenSpan{id, 0, 0});
    if (max_tokens == 0 && prompt->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "empty request: max_tokens is 0 and there is no prompt (give max_tokens in [1, ",
          options_.max_tokens_cap, "] or a prompt)"));
    }
  } else {
    prompt = tokenizer_->EncodeWithSpans(params.prompt);
  }
  if (!prompt.ok()) return prompt.status();

  auto job = std::make_shared<Job>();
  job->kind = JobKind::kGenerate;
  job->deadline = params.deadline;
  job->gen_sink = sink;
  job->max_tokens = max_tokens;
  job->prompt_tokens = static_cast<uint32_t>(prompt->size());
  job->top_logprobs = params.top_logprobs;
  absl::Status loaded = LoadIfStored(session_id, tenant);
  if (!loaded.ok()) return loaded;
  absl::MutexLock lock(&mu_);
  auto s = FindLocked(session_id, tenant);
  if (!s.ok()) return s.status();
  absl::Status admit = AdmitLocked(**s, tenant);
  if (!admit.ok()) return admit;
  SessionState& session = **s;
  SamplingConfig config =
      ResolveSampling(params.sampling, session.defaults, options_.default_sampling);
  job->text.emplace(config.stop);
  job->sampler.emplace(config);
  job->session = *s;
  if (session.fed == 0 && session.pending.empty()) {
    session.pending.push_back(PendingToken{backend_->metadata().bos_id, false, 0, 0});
  }
  for (const TokenSpan& t : *prompt) session.pending.push_back(PendingToken{t.id, false, 0, 0});
  session.job = job;
  jobs_.push_back(job);
  RecordAdmittedLocked(*job);
  return std::unique_ptr<GenerateCall>(new GenerateCall(this, job));
}

// ---- caller-side operations on a call
// ------------------------------------------------------------------

absl::StatusOr<bool> Engine::Append(Job* job, std::string_view chunk) {
  if (chunk.size() > options_.max_chunk_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("text chunk is ", chunk.size(), " bytes; the limit is ",
                     options_.max_chunk_bytes, " (--max_chunk_bytes)"));
  }
  auto tokens = job->inc->Append(chunk);  // caller thread only: no lock needed
  if (tokens.ok() && job->token_input_bytes > 0) {
    // Text after token ids: its byte spans continue after the ids' piece bytes.
    for (TokenSpan& t : *tokens) {
      t.begin += job->token_input_bytes;
      t.end += job->token_input_bytes;
    }
  }
  absl::MutexLock lock(&mu_);
  if (job->finished) {
    return job->final_status.ok() ? absl::FailedPreconditionError("the Score call has ended")
                                  : job->final_status;
  }
  if (job->input_closed) return absl::FailedPreconditionError("input already closed");
  if (!tokens.ok()) {
    job->fail_status = tokens.status();
    return tokens.status();
  }
  return PushInputLocked(job, *tokens);
}

absl::Time Engine::IdleDeadline() const {
  return options_.idle_call_timeout_ms > 0
             ? absl::Now() + absl::Milliseconds(options_.idle_call_timeout_ms)
             : absl::InfiniteFuture();
}

bool Engine::PushInputLocked(Job* job, const std::vector<TokenSpan>& tokens) {
  job->idle_deadline = IdleDeadline();
  SessionState& s = *job->session;
  for (const TokenSpan& t : tokens) s.pending.push_back(PendingToken{t.id, true, t.begin, t.end});
  if (s.pending.size() >= options_.max_pending_tokens) {
    job->input_paused = true;
    return false;
  }
  return true;
}

absl::StatusOr<bool> Engine::AppendTokens(Job* job, const std::vector<int32_t>& ids) {
  if (ids.size() > options_.max_chunk_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("token chunk has ", ids.size(), " ids; the limit is ", options_.max_chunk_bytes,
                     " (--max_chunk_bytes)"));
  }
  // Caller thread only (like job->inc): no lock needed for the input-side fields.
  if (job->inc->bytes_received() > 0) {
    return absl::FailedPreconditionError(
        "this Score call already received text; token ids may only come before any text");
  }
  absl::Status valid = CheckTokenIds(ids, tokenizer_->vocab_size(), "tokens");
  std::vector<TokenSpan> spans;
  if (valid.ok()) {
    job->token_input = true;
    spans.reserve(ids.size());
    for (int32_t id : ids) {
      const uint64_t begin = job->token_input_bytes;
      job->token_input_bytes += tokenizer_->PieceBytes(id).size();
      spans.push_back(TokenSpan{id, begin, job->token_input_bytes});
    }
  }
  absl::MutexLock lock(&mu_);
  if (job->finished) {
    return job->final_status.ok() ? absl::FailedPreconditionError("the Score call has ended")
                                  : job->final_status;
  }
  if (job->input_closed) return absl::FailedPreconditionError("input already closed");
  if (!valid.ok()) {
    job->fail_status = valid;
    return valid;
  }
  job->tokens_given += ids.size();
  return PushInputLocked(job, spans);
}

absl::Status Engine::CloseInput(Job* job) {
  auto tokens = job->inc->Finish();
  absl::MutexLock lock(&mu_);
  if (job->finished) return job->final_status;
  if (job->input_closed) return absl::OkStatus();
  job->input_closed = true;
  job->bytes = job->token_input_bytes + job->inc->bytes_received();
  if (!tokens.ok()) {
    job->fail_status = tokens.status();
    return tokens.status();
  }
  if (job->bytes == 0 && job->tokens_given == 0) {
    job->fail_status = absl::InvalidArgumentError(
        "empty Score call: send at least 1 byte of text (ScoreRequest.text)");
    return absl::OkStatus();
  }
  SessionState& s = *job->session;
  for (const TokenSpan& t : *tokens) s.pending.push_back(PendingToken{t.id, true, t.begin, t.end});
  return absl::OkStatus();
}

void Engine::Cancel(Job* job) {
  absl::MutexLock lock(&mu_);
  job->cancel_requested = true;
}

void Engine::Ack(Job* job, uint64_t position) {
  absl::MutexLock lock(&mu_);
  if (job->finished || job->session == nullptr) return;
  SessionState& s = *job->session;
  if (s.job.get() != job) return;
  // The last token the client has, then back to the last one that ends a line (within the log of
  // tokens since the oldest checkpoint; beyond it the resume point stays where it was).
  if (s.resume_point < 1) s.resume_point = 1;  // acknowledging: nothing beyond this is persisted yet
  for (int64_t p = std::min<int64_t>(static_cast<int64_t>(position) - 1, s.fed - 1);
       p >= s.resume_point; --p) {
    const int32_t id = s.checkpoints.TokenAt(p);
    if (id < 0) return;  // before the log: the resume point stays
    const std::string& piece = tokenizer_->PieceBytes(id);
    if (!piece.empty() && piece.back() == '\n') {
      s.resume_point = p + 1;
      return;
    }
  }
}

}  // namespace brt
