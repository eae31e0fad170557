#include "server/core/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/core/sampler.h"
#include "server/core/sampling_codec.h"
#include "server/core/session_id.h"
#include "server/core/text_stream.h"
#include "server/metrics/metrics.h"
#include "server/tokenizer/incremental_tokenizer.h"

namespace brt {

// A token accepted into a session but not yet fed to the model.
struct PendingToken {
  int32_t id = 0;
  bool report = false;  // a Score call wants its score (false for BOS, prompt and generated tokens)
  uint64_t begin = 0;   // byte span in the Score call's text
  uint64_t end = 0;
};

// All fields are guarded by Engine::mu_. Only the executor changes memory, next_logprobs and fed.
struct SessionState {
  std::string id;
  std::string label;
  SamplingOverrides defaults;
  int64_t created_ms = 0;
  int64_t last_used_ms = 0;
  MemoryPtr memory;                  // after `fed` tokens
  std::vector<float> next_logprobs;  // distribution at position `fed`; empty before BOS is fed
  int64_t fed = 0;                   // tokens fed, BOS included: the position of the next token
  std::deque<PendingToken> pending;  // accepted, not yet fed (front = position `fed`)
  std::vector<int32_t> recent;       // last fed text tokens, for the repetition penalty
  std::shared_ptr<Job> job;          // the active call, if any
  int64_t autosaved_fed = 0;         // `fed` at the last autosave (or restore)
  bool deleted = false;
};

enum class JobKind { kScore, kGenerate };

// An active Score or Generate call. Fields are guarded by Engine::mu_ except where noted.
struct Job {
  JobKind kind = JobKind::kScore;
  std::shared_ptr<SessionState> session;
  absl::Time deadline = absl::InfiniteFuture();
  bool cancel_requested = false;
  bool engine_cancelled = false;  // session deleted or server stopping
  absl::Status fail_status;       // set by the caller side to end the call with an error
  bool finished = false;
  absl::Status final_status;
  // Metrics only (set when EngineOptions::metrics is on): admission time, whether a model step has
  // included the call yet (queue wait), and the time of the last sampled token (inter-token
  // latency).
  absl::Time admitted;
  bool started = false;
  absl::Time last_token;

  // Score.
  ScoreSink* score_sink = nullptr;
  int32_t top_k = 0;
  bool omit_tokens = false;
  std::optional<IncrementalTokenizer> inc;  // caller thread only (Append/CloseInput)
  bool input_closed = false;
  bool input_paused = false;
  uint64_t bytes = 0;
  uint64_t tokens = 0;
  double total_nll = 0;

  // Generate.
  GenerateSink* gen_sink = nullptr;
  std::optional<Sampler> sampler;
  std::optional<TextStream> text;
  uint32_t max_tokens = 0;
  uint32_t generated = 0;
  uint32_t prompt_tokens = 0;
  FinishReason finishing = FinishReason::kUnspecified;
};

// One executor iteration's model work, built under the lock and run without it.
struct Engine::Plan {
  std::vector<std::shared_ptr<Job>> decode_jobs;
  std::vector<DecodeRow> decode_rows;
  std::vector<std::shared_ptr<Job>> score_jobs;
  std::vector<ScoreBlocksRow> score_rows;
  int score_top_k = 0;
};

namespace {

constexpr double kLn2 = 0.69314718055994530942;
constexpr size_t kRecentCap = kMaxRepetitionWindow;

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One snapshot save or restore that started at t0: its duration and size when `status` is OK, else
// a failure by status code. No-op without metrics.
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

void PushRecent(SessionState& s, int32_t id) {
  s.recent.push_back(id);
  if (s.recent.size() > 2 * kRecentCap)
    s.recent.erase(s.recent.begin(), s.recent.end() - kRecentCap);
}

}  // namespace

// ---- calls
// ------------------------------------------------------------------------------------------

absl::StatusOr<bool> ScoreCall::Append(std::string_view chunk) {
  return engine_->Append(job_.get(), chunk);
}
absl::Status ScoreCall::CloseInput() { return engine_->CloseInput(job_.get()); }
void ScoreCall::Cancel() { engine_->Cancel(job_.get()); }
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
  // The executor has not started: this thread may still call the backend.
  auto initial = backend->InitialState();
  if (!initial.ok()) return initial.status();
  return std::unique_ptr<Engine>(new Engine(std::move(options), std::move(backend),
                                            std::move(tokenizer), *std::move(initial)));
}

Engine::Engine(EngineOptions options, std::unique_ptr<ModelBackend> backend,
               std::shared_ptr<const Tokenizer> tokenizer, MemoryPtr initial)
    : options_(std::move(options)),
      backend_(std::move(backend)),
      tokenizer_(std::move(tokenizer)),
      initial_memory_(std::move(initial)),
      window_(backend_->metadata().window) {
  if (metrics::Metrics* m = options_.metrics) {
    m->SetQueueCapacity(options_.max_queue);
    m->SetSessionsCapacity(options_.max_sessions);
    m->SetQueueDepth(0);
    m->SetSessionsResident(0);
    m->SetStateBytes(metrics::StateLocation::kDevice, 0);
  }
  executor_ = std::thread([this] { ExecutorLoop(); });
  if (options_.snapshot_store != nullptr &&
      (options_.session_idle_ttl_ms > 0 || options_.session_memory_budget_bytes > 0 ||
       options_.autosave_every_blocks > 0)) {
    housekeeper_ = std::thread([this] { HousekeepingLoop(); });
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
  return info;
}

absl::StatusOr<std::shared_ptr<SessionState>> Engine::FindLocked(const std::string& id) const {
  if (id.empty()) return absl::InvalidArgumentError("session_id is required");
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session ", id));
  return it->second;
}

absl::StatusOr<SessionInfo> Engine::CreateSession(const std::string& label,
                                                  const SamplingOverrides& default_sampling) {
  if (label.size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("label must be at most 256 bytes, got ", label.size()));
  }
  absl::Status valid =
      ValidateSampling(default_sampling, backend_->metadata().vocab_size, "default_sampling.");
  if (!valid.ok()) return valid;
  auto s = std::make_shared<SessionState>();
  s->label = label;
  s->defaults = default_sampling;
  s->created_ms = s->last_used_ms = NowMs();
  s->memory = initial_memory_;
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down");
  if (sessions_.size() >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds its maximum of ", options_.max_sessions,
                     " sessions (--max_sessions); delete some first"));
  }
  do {
    s->id = NewSessionId();
  } while (sessions_.contains(s->id));
  sessions_[s->id] = s;
  RecordSessionsLocked();
  return InfoLocked(*s);
}

absl::StatusOr<SessionInfo> Engine::GetSession(const std::string& id) {
  absl::Status loaded = LoadIfStored(id);
  if (!loaded.ok()) return loaded;
  absl::ReaderMutexLock lock(&mu_);
  auto s = FindLocked(id);
  if (!s.ok()) return s.status();
  return InfoLocked(**s);
}

std::vector<SessionInfo> Engine::ListSessions() const {
  std::vector<SessionInfo> out;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [id, s] : sessions_) out.push_back(InfoLocked(*s));
  }
  std::sort(out.begin(), out.end(), [](const SessionInfo& a, const SessionInfo& b) {
    return a.created_unix_ms < b.created_unix_ms ||
           (a.created_unix_ms == b.created_unix_ms && a.id < b.id);
  });
  return out;
}

absl::Status Engine::DeleteSession(const std::string& id) {
  // The session is gone everywhere: its stored snapshot too (else the next use would restore it).
  absl::Status stored = absl::NotFoundError("");
  if (options_.snapshot_store != nullptr && LooksLikeSessionId(id)) {
    stored = options_.snapshot_store->Delete(id);
  }
  absl::MutexLock lock(&mu_);
  auto s = FindLocked(id);
  if (!s.ok()) return stored.ok() ? absl::OkStatus() : s.status();
  (*s)->deleted = true;  // an active call ends at its next step (the executor sees it)
  sessions_.erase(id);
  RecordSessionsLocked();
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

absl::Status Engine::AdmitLocked(const SessionState& s) const {
  if (draining_) return absl::UnavailableError("the server is shutting down");
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
                                                              ScoreSink* sink) {
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
  job->inc.emplace(tokenizer_.get());
  absl::Status loaded = LoadIfStored(session_id);
  if (!loaded.ok()) return loaded;
  absl::MutexLock lock(&mu_);
  auto s = FindLocked(session_id);
  if (!s.ok()) return s.status();
  absl::Status admit = AdmitLocked(**s);
  if (!admit.ok()) return admit;
  job->session = *s;
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
                                                                    GenerateSink* sink) {
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
  auto prompt = tokenizer_->EncodeWithSpans(params.prompt);
  if (!prompt.ok()) return prompt.status();

  auto job = std::make_shared<Job>();
  job->kind = JobKind::kGenerate;
  job->deadline = params.deadline;
  job->gen_sink = sink;
  job->max_tokens = max_tokens;
  job->prompt_tokens = static_cast<uint32_t>(prompt->size());
  absl::Status loaded = LoadIfStored(session_id);
  if (!loaded.ok()) return loaded;
  absl::MutexLock lock(&mu_);
  auto s = FindLocked(session_id);
  if (!s.ok()) return s.status();
  absl::Status admit = AdmitLocked(**s);
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
  SessionState& s = *job->session;
  for (const TokenSpan& t : *tokens) s.pending.push_back(PendingToken{t.id, true, t.begin, t.end});
  if (s.pending.size() >= options_.max_pending_tokens) {
    job->input_paused = true;
    return false;
  }
  return true;
}

absl::Status Engine::CloseInput(Job* job) {
  auto tokens = job->inc->Finish();
  absl::MutexLock lock(&mu_);
  if (job->finished) return job->final_status;
  if (job->input_closed) return absl::OkStatus();
  job->input_closed = true;
  job->bytes = job->inc->bytes_received();
  if (!tokens.ok()) {
    job->fail_status = tokens.status();
    return tokens.status();
  }
  if (job->bytes == 0) {
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

// ---- executor
// ---------------------------------------------------------------------------------------

void Engine::Deliver(Events* events) {
  for (auto& e : *events) e();
  events->clear();
}

bool Engine::HasWorkLocked() const {
  if (stop_ || !tasks_.empty()) return true;
  const absl::Time now = absl::Now();
  for (const auto& job : jobs_) {
    const SessionState& s = *job->session;
    if (job->cancel_requested || s.deleted || !job->fail_status.ok() || now > job->deadline)
      return true;
    if (job->kind == JobKind::kGenerate) return true;
    if (s.pending.empty()) {
      if (job->input_closed || job->input_paused) return true;
      continue;
    }
    if (s.fed % window_ != 0 || s.pending.size() >= static_cast<size_t>(window_) ||
        job->input_closed) {
      return true;
    }
    if (job->input_paused && s.pending.size() <= options_.max_pending_tokens / 2) return true;
  }
  return false;
}

void Engine::ExecutorLoop() {
  backend_->InitExecutorThread();
  Events events;
  std::deque<std::function<void()>> tasks;
  while (true) {
    Plan plan;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &Engine::HasWorkLocked), absl::Milliseconds(50));
      tasks.swap(tasks_);
      if (stop_) {
        auto jobs = jobs_;
        for (const auto& job : jobs) {
          job->engine_cancelled = true;
          FinishLocked(job, absl::UnavailableError("the server is shutting down"), &events);
        }
        break;
      }
      PlanLocked(&plan, &events);
    }
    Deliver(&events);
    for (auto& task : tasks) task();  // persistence work (memory export/import), between model steps
    tasks.clear();
    RunDecode(&plan);
    RunScore(&plan);
  }
  Deliver(&events);
  for (auto& task : tasks) task();
}

void Engine::FinishLocked(const std::shared_ptr<Job>& job, absl::Status status, Events* events) {
  if (job->finished) return;
  job->finished = true;
  job->final_status = status;
  jobs_.erase(std::remove(jobs_.begin(), jobs_.end(), job), jobs_.end());
  if (options_.metrics != nullptr) {
    options_.metrics->SetQueueDepth(static_cast<int64_t>(jobs_.size()));
  }
  SessionState& s = *job->session;
  if (s.job == job) s.job = nullptr;
  s.pending.clear();  // unprocessed tokens are dropped: the session ends at a token/block boundary
  s.last_used_ms = NowMs();
  const uint64_t position = static_cast<uint64_t>(std::max<int64_t>(s.fed, 1));
  if (job->kind == JobKind::kScore) {
    ScoreSink* sink = job->score_sink;
    if (!status.ok()) {
      events->push_back([sink, status] { sink->OnFinish(status); });
      return;
    }
    ScoreSummaryResult sum;
    sum.tokens = job->tokens;
    sum.bytes = job->bytes;
    sum.total_nll = job->total_nll;
    sum.mean_nll = sum.tokens > 0 ? sum.total_nll / static_cast<double>(sum.tokens) : 0.0;
    sum.perplexity = std::exp(sum.mean_nll);
    sum.bits_per_token = sum.mean_nll / kLn2;
    sum.bits_per_byte = sum.bytes > 0 ? sum.total_nll / kLn2 / static_cast<double>(sum.bytes) : 0.0;
    sum.position = position;
    events->push_back([sink, sum] { sink->OnFinish(sum); });
    return;
  }
  GenerateSink* sink = job->gen_sink;
  if (!status.ok() && !job->engine_cancelled) {
    events->push_back([sink, status] { sink->OnFinish(status); });
    return;
  }
  GenerateSummary sum;
  sum.reason = job->engine_cancelled                          ? FinishReason::kCancelled
               : job->finishing != FinishReason::kUnspecified ? job->finishing
                                                              : FinishReason::kLength;
  sum.text = job->text->Flush();
  sum.prompt_tokens = job->prompt_tokens;
  sum.generated_tokens = job->generated;
  sum.session_position = position;
  events->push_back([sink, sum] { sink->OnFinish(sum); });
}

void Engine::SampleLocked(Job& job, Events* events) {
  SessionState& s = *job.session;
  const int32_t token = job.sampler->Sample(s.next_logprobs, s.recent);
  const float logprob = s.next_logprobs[token];
  if (token == backend_->metadata().eos_id) {
    job.finishing = FinishReason::kEos;  // EOS ends the call and is not appended
    return;
  }
  GeneratedToken out;
  out.bytes = tokenizer_->PieceBytes(token);
  out.text = job.text->Push(out.bytes);
  out.token_id = token;
  out.logprob = logprob;
  out.position = static_cast<uint64_t>(s.fed);
  if (metrics::Metrics* m = options_.metrics) {
    const absl::Time now = absl::Now();
    if (job.generated == 0) {
      m->ObserveTimeToFirstToken(absl::ToDoubleSeconds(now - job.admitted));
    } else {
      m->ObserveInterTokenLatency(absl::ToDoubleSeconds(now - job.last_token));
    }
    job.last_token = now;
    m->AddGeneratedTokens(1);
  }
  job.generated++;
  s.pending.push_back(PendingToken{token, false, 0, 0});
  if (job.text->stopped()) {
    job.finishing = FinishReason::kStopSequence;
  } else if (job.generated >= job.max_tokens) {
    job.finishing = FinishReason::kLength;
  }
  GenerateSink* sink = job.gen_sink;
  events->push_back([sink, out = std::move(out)]() mutable { sink->OnToken(std::move(out)); });
}

void Engine::PlanLocked(Plan* plan, Events* events) {
  const absl::Time now = absl::Now();
  const size_t w = static_cast<size_t>(window_);
  std::vector<std::shared_ptr<Job>> score_candidates;
  auto jobs = jobs_;  // FinishLocked edits jobs_
  // Rotate the start so decode rows beyond max_decode_batch take turns.
  size_t n_jobs = jobs.size();
  size_t start = n_jobs > 0 ? decode_cursor_ % n_jobs : 0;
  for (size_t k = 0; k < n_jobs; ++k) {
    const std::shared_ptr<Job>& job = jobs[(start + k) % n_jobs];
    SessionState& s = *job->session;
    if (s.deleted) {
      job->engine_cancelled = true;
      FinishLocked(job, absl::CancelledError("the session was deleted"), events);
      continue;
    }
    if (job->cancel_requested) {
      FinishLocked(job, absl::CancelledError("the call was cancelled"), events);
      continue;
    }
    if (!job->fail_status.ok()) {
      FinishLocked(job, job->fail_status, events);
      continue;
    }
    if (now > job->deadline) {
      FinishLocked(job, absl::DeadlineExceededError("the call's deadline passed"), events);
      continue;
    }
    if (job->kind == JobKind::kGenerate && s.pending.empty()) {
      if (job->finishing != FinishReason::kUnspecified || job->generated >= job->max_tokens) {
        FinishLocked(job, absl::OkStatus(), events);
        continue;
      }
      SampleLocked(*job, events);
      if (s.pending.empty()) {  // EOS
        FinishLocked(job, absl::OkStatus(), events);
        continue;
      }
    }
    if (job->kind == JobKind::kScore) {
      if (job->input_paused && s.pending.size() <= options_.max_pending_tokens / 2) {
        job->input_paused = false;
        ScoreSink* sink = job->score_sink;
        events->push_back([sink] { sink->OnInputReady(); });
      }
      if (s.pending.empty()) {
        if (job->input_closed) FinishLocked(job, absl::OkStatus(), events);
        continue;
      }
    }
    const bool more_may_come = job->kind == JobKind::kScore && !job->input_closed;
    const bool at_boundary = s.fed % window_ == 0;
    if (!at_boundary || (s.pending.size() < w && !more_may_come)) {
      if (plan->decode_rows.size() < options_.max_decode_batch) {
        RecordStartedLocked(*job, now);
        plan->decode_jobs.push_back(job);
        plan->decode_rows.push_back(DecodeRow{s.pending.front().id, s.fed, s.memory});
      }
    } else if (s.pending.size() >= w) {
      score_candidates.push_back(job);
    }
  }
  decode_cursor_ = start + plan->decode_rows.size();

  if (score_candidates.empty()) return;
  const size_t n = score_candidates.size();
  const size_t first = score_cursor_ % n;
  const size_t take = std::min<size_t>(n, options_.max_batch_size);
  score_cursor_ = first + take;
  // Token budget per call: max_batch_size * max_blocks_per_call blocks, shared by the rows, so fewer
  // rows run more blocks each while the latency one call adds to generation stays bounded.
  size_t blocks = std::max<size_t>(
      1, static_cast<size_t>(options_.max_batch_size) * options_.max_blocks_per_call / take);
  for (size_t i = 0; i < take; ++i) {
    const auto& job = score_candidates[(first + i) % n];
    blocks = std::min(blocks, job->session->pending.size() / w);
    RecordStartedLocked(*job, now);
    plan->score_jobs.push_back(job);
  }
  for (const auto& job : plan->score_jobs) {
    SessionState& s = *job->session;
    ScoreBlocksRow row;
    row.tokens.reserve(blocks * w);
    for (size_t i = 0; i < blocks * w; ++i) row.tokens.push_back(s.pending[i].id);
    row.memory = s.memory;
    plan->score_rows.push_back(std::move(row));
    if (job->kind == JobKind::kScore && !job->omit_tokens) {
      plan->score_top_k = std::max(plan->score_top_k, job->top_k);
    }
  }
}

std::vector<AlternativeResult> Engine::TopK(const std::vector<float>& logprobs, int k) const {
  std::vector<AlternativeResult> out;
  if (k <= 0 || logprobs.empty()) return out;
  k = std::min<int>(k, static_cast<int>(logprobs.size()));
  std::vector<int32_t> idx(logprobs.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return logprobs[a] > logprobs[b] || (logprobs[a] == logprobs[b] && a < b);
  });
  for (int i = 0; i < k; ++i) {
    out.push_back(AlternativeResult{idx[i], tokenizer_->PieceBytes(idx[i]), logprobs[idx[i]]});
  }
  return out;
}

void Engine::RunDecode(Plan* plan) {
  if (plan->decode_rows.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  auto results = backend_->DecodeStep(plan->decode_rows);
  stats_.RecordDecode(static_cast<uint32_t>(plan->decode_rows.size()));
  if (options_.metrics != nullptr) {
    options_.metrics->ObserveBatch(metrics::BatchKind::kDecode,
                                   static_cast<uint32_t>(plan->decode_rows.size()),
                                   SecondsSince(t0));
  }
  uint64_t scored = 0;
  Events events;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < plan->decode_jobs.size(); ++i) {
      const auto& job = plan->decode_jobs[i];
      if (job->finished || job->session->deleted) continue;
      if (!results.ok()) {
        FinishLocked(job, results.status(), &events);
        continue;
      }
      SessionState& s = *job->session;
      DecodeResult& r = (*results)[i];
      const PendingToken p = s.pending.front();
      if (p.report && !s.next_logprobs.empty()) {
        TokenScoreResult t;
        t.position = static_cast<uint64_t>(s.fed);
        t.token_id = p.id;
        t.piece = tokenizer_->PieceBytes(p.id);
        t.byte_begin = p.begin;
        t.byte_end = p.end;
        t.nll = -s.next_logprobs[p.id];
        job->tokens++;
        scored++;
        job->total_nll += t.nll;
        if (!job->omit_tokens) {
          t.top = TopK(s.next_logprobs, job->top_k);
          ScoreSink* sink = job->score_sink;
          std::vector<TokenScoreResult> batch;
          batch.push_back(std::move(t));
          events.push_back(
              [sink, batch = std::move(batch)]() mutable { sink->OnTokens(std::move(batch)); });
        }
      }
      if (p.id != backend_->metadata().bos_id || s.fed != 0) PushRecent(s, p.id);
      s.memory = std::move(r.memory);
      s.next_logprobs = std::move(r.logprobs);
      s.fed++;
      s.pending.pop_front();
    }
  }
  if (scored > 0 && options_.metrics != nullptr) options_.metrics->AddScoredTokens(scored);
  Deliver(&events);
}

void Engine::RunScore(Plan* plan) {
  if (plan->score_rows.empty()) return;
  const int top_k = plan->score_top_k;
  const auto t0 = std::chrono::steady_clock::now();
  auto results = backend_->ScoreBlocks(plan->score_rows, top_k);
  const size_t n = plan->score_rows[0].tokens.size();
  stats_.RecordScore(static_cast<uint32_t>(plan->score_rows.size()), n * plan->score_rows.size());
  if (options_.metrics != nullptr) {
    options_.metrics->ObserveBatch(metrics::BatchKind::kScoreBlock,
                                   static_cast<uint32_t>(plan->score_rows.size()),
                                   SecondsSince(t0));
  }
  uint64_t scored = 0;
  Events events;
  {
    absl::MutexLock lock(&mu_);
    for (size_t row = 0; row < plan->score_jobs.size(); ++row) {
      const auto& job = plan->score_jobs[row];
      if (job->finished || job->session->deleted) continue;
      if (!results.ok()) {
        FinishLocked(job, results.status(), &events);
        continue;
      }
      SessionState& s = *job->session;
      ScoreBlocksResult& r = (*results)[row];
      std::vector<TokenScoreResult> batch;
      const bool want = job->kind == JobKind::kScore;
      for (size_t i = 0; i < n; ++i) {
        const PendingToken& p = s.pending[i];
        if (!(i == 0 && s.fed == 0)) PushRecent(s, p.id);
        if (!want || !p.report) continue;
        float logprob;
        if (i == 0) {
          if (s.next_logprobs.empty()) continue;
          logprob = s.next_logprobs[p.id];
        } else {
          logprob = r.target_logprobs[i - 1];
        }
        job->tokens++;
        scored++;
        job->total_nll += -logprob;
        if (job->omit_tokens) continue;
        TokenScoreResult t;
        t.position = static_cast<uint64_t>(s.fed) + i;
        t.token_id = p.id;
        t.piece = tokenizer_->PieceBytes(p.id);
        t.byte_begin = p.begin;
        t.byte_end = p.end;
        t.nll = -logprob;
        if (job->top_k > 0) {
          if (i == 0) {
            t.top = TopK(s.next_logprobs, job->top_k);
          } else {
            for (int j = 0; j < job->top_k && j < top_k; ++j) {
              size_t at = (i - 1) * top_k + j;
              int32_t id = r.topk_ids[at];
              t.top.push_back(
                  AlternativeResult{id, tokenizer_->PieceBytes(id), r.topk_logprobs[at]});
            }
          }
        }
        batch.push_back(std::move(t));
      }
      s.memory = std::move(r.memory);
      s.next_logprobs = std::move(r.next_logprobs);
      s.fed += static_cast<int64_t>(n);
      s.pending.erase(s.pending.begin(), s.pending.begin() + n);
      if (!batch.empty()) {
        ScoreSink* sink = job->score_sink;
        events.push_back(
            [sink, batch = std::move(batch)]() mutable { sink->OnTokens(std::move(batch)); });
      }
    }
  }
  if (scored > 0 && options_.metrics != nullptr) options_.metrics->AddScoredTokens(scored);
  Deliver(&events);
}

// ---- session persistence
// ----------------------------------------------------------------------------

namespace bp = persistence;

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

absl::Status Engine::RunOnExecutor(std::function<void()> task) {
  absl::Notification done;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return absl::UnavailableError("the server is shutting down");
    tasks_.push_back([&] {
      task();
      done.Notify();
    });
  }
  done.WaitForNotification();
  return absl::OkStatus();
}

absl::StatusOr<bp::SessionSnapshot> Engine::Capture(const std::string& id, bool allow_busy) {
  absl::Status loaded = LoadIfStored(id);
  if (!loaded.ok()) return loaded;
  bp::SessionSnapshot snap;
  MemoryPtr memory;
  std::vector<float> next_logprobs;
  {
    // The memory is immutable: what is read here stays this session's state at this boundary even if a
    // call starts on it before the executor copies it out.
    absl::ReaderMutexLock lock(&mu_);
    auto found = FindLocked(id);
    if (!found.ok()) return found.status();
    const SessionState& s = **found;
    if (s.job != nullptr && !allow_busy) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", id, " is busy with a Score or Generate call; save it when the call has ended"));
    }
    memory = s.memory;
    next_logprobs = s.next_logprobs;
    snap.position = static_cast<uint64_t>(s.fed);
    snap.recent_tokens.assign(s.recent.begin(), s.recent.end());
    snap.metadata.session_id = s.id;
    snap.metadata.label = s.label;
    snap.metadata.created_unix_ms = s.created_ms;
    snap.metadata.last_used_unix_ms = s.last_used_ms;
    snap.metadata.default_sampling = EncodeSamplingOverrides(s.defaults);
  }
  snap.model = Identity();
  // The sampler's generator lives per Generate call (seeded by SamplingParams.seed), so a session has no
  // RNG state between calls; pending tokens and an untokenized tail exist only during a call.
  absl::StatusOr<HostMemory> host = absl::InternalError("not run");
  absl::Status ran = RunOnExecutor([&] { host = backend_->ExportMemory(memory); });
  if (!ran.ok()) return ran;
  if (!host.ok()) return host.status();
  snap.tensors.push_back(ToBlob(bp::kKvTensor, std::move(host->kv)));
  snap.tensors.push_back(ToBlob(bp::kStateTensor, std::move(host->state)));
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

absl::StatusOr<SavedSession> Engine::SaveSession(const std::string& id, bool to_store,
                                                 bool return_bytes) {
  if (to_store && options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto snap = Capture(id);
  if (!snap.ok()) {
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, snap.status(), 0);
    return snap.status();
  }
  SavedSession out;
  std::string bytes = bp::EncodeSnapshot(*snap, options_.snapshot_hmac_key);
  out.size_bytes = bytes.size();
  if (to_store) {
    absl::Status put = options_.snapshot_store->Put(id, bytes);
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, put, bytes.size());
    if (!put.ok()) return put;
    out.key = id;
  } else {
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, absl::OkStatus(), bytes.size());
  }
  if (return_bytes) out.bytes = std::move(bytes);
  return out;
}

absl::StatusOr<SessionInfo> Engine::Install(bp::SessionSnapshot snap, bool new_id) {
  const int32_t vocab = backend_->metadata().vocab_size;
  auto bad = [](const std::string& what) {
    return absl::DataLossError(absl::StrCat("snapshot refused: ", what));
  };
  if (!new_id && !LooksLikeSessionId(snap.metadata.session_id)) {
    return bad(absl::StrCat("its session id '", snap.metadata.session_id.substr(0, 64),
                            "' is not a session id"));
  }
  if (!snap.pending_tokens.empty() || !snap.text_tail.empty() || !snap.rng_state.empty()) {
    return absl::FailedPreconditionError(
        "snapshot refused: it holds an unfinished block, text tail or RNG state, which this server "
        "does not write or read");
  }
  for (uint32_t t : snap.recent_tokens) {
    if (t >= static_cast<uint32_t>(vocab)) return bad(absl::StrCat("recent token ", t, " >= vocab"));
  }
  const bp::TensorBlob* kv = snap.FindTensor(bp::kKvTensor);
  const bp::TensorBlob* state = snap.FindTensor(bp::kStateTensor);
  const bp::TensorBlob* lp = snap.FindTensor(bp::kNextLogprobsTensor);
  if (kv == nullptr || state == nullptr) return bad("it has no kv or state tensor");
  if ((snap.position > 0) != (lp != nullptr)) {
    return bad("next_logprobs must be present exactly when the position is past 0");
  }
  if (snap.position > (uint64_t{1} << 62)) return bad("position out of range");
  auto defaults = DecodeSamplingOverrides(snap.metadata.default_sampling);
  if (!defaults.ok()) return bad(std::string(defaults.status().message()));
  absl::Status valid = ValidateSampling(*defaults, vocab, "default_sampling.");
  if (!valid.ok()) return bad(std::string(valid.message()));
  if (snap.metadata.label.size() > 256) return bad("label longer than 256 bytes");

  HostMemory host;
  host.kv = FromBlob(*kv);
  host.state = FromBlob(*state);
  absl::StatusOr<MemoryPtr> memory = absl::InternalError("not run");
  absl::Status ran = RunOnExecutor([&] { memory = backend_->ImportMemory(host); });
  if (!ran.ok()) return ran;
  if (!memory.ok()) {
    if (absl::IsInvalidArgument(memory.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot refused: ", memory.status().message()));
    }
    return memory.status();
  }

  auto s = std::make_shared<SessionState>();
  s->label = snap.metadata.label;
  s->defaults = *std::move(defaults);
  s->created_ms = snap.metadata.created_unix_ms;
  s->last_used_ms = NowMs();
  s->memory = *std::move(memory);
  if (lp != nullptr) {
    s->next_logprobs.resize(lp->data.size() / sizeof(float));
    std::memcpy(s->next_logprobs.data(), lp->data.data(), lp->data.size());
  }
  s->fed = static_cast<int64_t>(snap.position);
  s->autosaved_fed = s->fed;
  s->recent.assign(snap.recent_tokens.begin(), snap.recent_tokens.end());
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down");
  if (sessions_.size() >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds its maximum of ", options_.max_sessions,
                     " sessions (--max_sessions); delete some first"));
  }
  if (new_id) {
    do {
      s->id = NewSessionId();
    } while (sessions_.contains(s->id));
  } else {
    s->id = snap.metadata.session_id;
    if (sessions_.contains(s->id)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "session ", s->id, " is already loaded; delete it first or restore with new_id"));
    }
  }
  sessions_[s->id] = s;
  RecordSessionsLocked();
  return InfoLocked(*s);
}

absl::StatusOr<SessionInfo> Engine::RestoreSession(std::string_view bytes, bool new_id) {
  return RestoreBytes(bytes, new_id, std::chrono::steady_clock::now());
}

absl::StatusOr<SessionInfo> Engine::RestoreBytes(std::string_view bytes, bool new_id,
                                                 std::chrono::steady_clock::time_point t0) {
  bp::DecodeOptions decode;
  decode.expected = Identity();
  decode.hmac_key = options_.snapshot_hmac_key;
  auto snap = bp::DecodeSnapshot(bytes, decode);
  absl::StatusOr<SessionInfo> info =
      snap.ok() ? Install(*std::move(snap), new_id) : absl::StatusOr<SessionInfo>(snap.status());
  RecordSnapshot(options_.metrics, metrics::SnapshotOp::kRestore, t0, info.status(), bytes.size());
  return info;
}

absl::StatusOr<SessionInfo> Engine::RestoreSessionFromStore(const std::string& key, bool new_id) {
  if (options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  absl::Status valid = bp::ValidateSnapshotKey(key);
  if (!valid.ok()) return valid;
  const auto t0 = std::chrono::steady_clock::now();
  auto bytes = options_.snapshot_store->Get(key);
  if (!bytes.ok()) {
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kRestore, t0, bytes.status(), 0);
    return bytes.status();
  }
  return RestoreBytes(*bytes, new_id, t0);
}

absl::Status Engine::LoadIfStored(const std::string& id) {
  if (options_.snapshot_store == nullptr || !LooksLikeSessionId(id)) return absl::OkStatus();
  {
    absl::ReaderMutexLock lock(&mu_);
    if (sessions_.contains(id) || draining_) return absl::OkStatus();
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto bytes = options_.snapshot_store->Get(id);
  if (absl::IsNotFound(bytes.status())) return absl::OkStatus();  // the caller reports NOT_FOUND
  if (!bytes.ok()) {
    RecordSnapshot(options_.metrics, metrics::SnapshotOp::kRestore, t0, bytes.status(), 0);
    return bytes.status();
  }
  auto restored = RestoreBytes(*bytes, /*new_id=*/false, t0);
  if (absl::IsAlreadyExists(restored.status())) return absl::OkStatus();  // another caller won
  if (!restored.ok()) {
    return absl::Status(restored.status().code(),
                        absl::StrCat("restoring session ", id, " from the snapshot store: ",
                                     restored.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> Engine::ForkSession(const std::string& id) {
  absl::Status loaded = LoadIfStored(id);
  if (!loaded.ok()) return loaded;
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down");
  auto found = FindLocked(id);
  if (!found.ok()) return found.status();
  const SessionState& parent = **found;
  if (parent.job != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", id, " is busy with a Score or Generate call; fork it when the call has ended"));
  }
  if (sessions_.size() >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds its maximum of ", options_.max_sessions,
                     " sessions (--max_sessions); delete some first"));
  }
  auto s = std::make_shared<SessionState>();
  s->label = parent.label;
  s->defaults = parent.defaults;
  s->created_ms = s->last_used_ms = NowMs();
  s->memory = parent.memory;  // immutable: shared until either session advances
  s->next_logprobs = parent.next_logprobs;
  s->fed = parent.fed;
  s->recent = parent.recent;
  do {
    s->id = NewSessionId();
  } while (sessions_.contains(s->id));
  sessions_[s->id] = s;
  RecordSessionsLocked();
  return InfoLocked(*s);
}

absl::StatusOr<std::vector<std::string>> Engine::ListSnapshots() {
  if (options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  return options_.snapshot_store->List();
}

absl::Status Engine::DeleteSnapshot(const std::string& key) {
  if (options_.snapshot_store == nullptr) {
    return absl::FailedPreconditionError("the server has no snapshot store (--snapshot_store)");
  }
  return options_.snapshot_store->Delete(key);
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
  std::vector<std::string> ids;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [id, s] : sessions_) ids.push_back(id);
  }
  absl::Status first;
  size_t saved = 0;
  for (const std::string& id : ids) {
    auto r = SaveSession(id, /*to_store=*/true, /*return_bytes=*/false);
    if (r.ok()) {
      saved++;
    } else if (first.ok()) {
      first = r.status();
    }
  }
  if (!first.ok()) return first;
  return saved;
}

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
  while (true) {
    std::vector<std::string> autosave;
    std::vector<std::pair<std::string, metrics::EvictionReason>> evict;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_housekeeping_),
                           absl::Milliseconds(options_.housekeeping_interval_ms));
      if (stop_housekeeping_) return;
      if (draining_) continue;
      const int64_t now = NowMs();
      std::vector<std::pair<int64_t, std::string>> idle;  // (last use, id)
      for (const auto& [id, s] : sessions_) {
        if (autosave_tokens > 0 && s->fed - s->autosaved_fed >= autosave_tokens) autosave.push_back(id);
        if (s->job == nullptr) idle.emplace_back(s->last_used_ms, id);
      }
      std::sort(idle.begin(), idle.end());  // least recently used first
      uint64_t resident = sessions_.size() * per_session;
      for (const auto& [last_used, id] : idle) {
        const bool expired =
            options_.session_idle_ttl_ms > 0 && now - last_used >= options_.session_idle_ttl_ms;
        const bool over = options_.session_memory_budget_bytes > 0 &&
                          resident > options_.session_memory_budget_bytes;
        if (!expired && !over) break;  // the rest are more recent
        evict.emplace_back(id, expired ? metrics::EvictionReason::kIdleTimeout
                                       : metrics::EvictionReason::kCapacity);
        resident -= per_session;
      }
    }
    for (const std::string& id : autosave) Autosave(id);
    for (const auto& [id, reason] : evict) Evict(id, reason);
  }
}

bool Engine::Autosave(const std::string& id) {
  const auto t0 = std::chrono::steady_clock::now();
  auto snap = Capture(id, /*allow_busy=*/true);
  if (!snap.ok()) return false;  // deleted meanwhile: nothing to save
  const std::string bytes = bp::EncodeSnapshot(*snap, options_.snapshot_hmac_key);
  absl::Status put = options_.snapshot_store->Put(id, bytes);
  RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, put, bytes.size());
  if (!put.ok()) {
    std::fprintf(stderr, "brt-server: autosave of %s failed: %s\n", id.c_str(), put.ToString().c_str());
    return false;
  }
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end()) it->second->autosaved_fed = static_cast<int64_t>(snap->position);
  autosaves_++;
  return true;
}

bool Engine::Evict(const std::string& id, metrics::EvictionReason reason) {
  const auto t0 = std::chrono::steady_clock::now();
  auto snap = Capture(id, /*allow_busy=*/false);
  if (!snap.ok()) return false;  // busy again, or deleted: skipped, not a failure
  const std::string bytes = bp::EncodeSnapshot(*snap, options_.snapshot_hmac_key);
  absl::Status put = options_.snapshot_store->Put(id, bytes);
  RecordSnapshot(options_.metrics, metrics::SnapshotOp::kSave, t0, put, bytes.size());
  if (!put.ok()) {
    std::fprintf(stderr, "brt-server: evicting %s failed (kept loaded): %s\n", id.c_str(),
                 put.ToString().c_str());
    return false;
  }
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  const SessionState& s = *it->second;
  // Free it only if nothing happened to it since the capture (else the stored copy is stale; the next
  // round tries again).
  if (s.job != nullptr || s.fed != static_cast<int64_t>(snap->position) ||
      s.last_used_ms != snap->metadata.last_used_unix_ms) {
    return false;
  }
  sessions_.erase(it);
  RecordSessionsLocked();
  evictions_++;
  if (options_.metrics != nullptr) options_.metrics->AddSessionsEvicted(reason);
  return true;
}

}  // namespace brt
