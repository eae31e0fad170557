// The executor: the one thread that owns the model. Each iteration plans under the engine lock (pure
// bookkeeping plus BatchPlanner), runs the batched model calls without the lock, applies their results
// under the lock (positions, NLL totals: cheap), and builds the replies (pieces, top-k) after releasing
// it, so RPC threads never wait on string building or vocabulary sorts.
#include <algorithm>
#include <chrono>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/core/call_results.h"
#include "server/core/engine.h"
#include "server/core/engine_internal.h"
#include "server/metrics/metrics.h"

namespace brt {

// One executor iteration's model work, built under the lock and run without it.
struct Engine::Plan {
  std::vector<int32_t> init_slots;  // slots newly given to fresh sessions: initialise first
  std::vector<std::shared_ptr<Job>> decode_jobs;
  std::vector<DecodeRow> decode_rows;
  std::vector<std::shared_ptr<Job>> score_jobs;
  std::vector<ScoreBlocksRow> score_rows;
  int score_top_k = 0;
  std::vector<std::shared_ptr<Job>> span_jobs;
  std::vector<SpanRow> span_rows;
  int span_top_k = 0;
  // Some span row belongs to a Score call (its tokens' scores reported, or a rewind's re-read): the spans
  // go through the export's span_slots, the path a Score's spans always take, so that a re-read rounds
  // exactly as the first reading did (a prompt's spans may take the native decoder, which rounds apart).
  bool span_all_positions = false;
};

namespace {

constexpr size_t kRecentCap = kMaxRepetitionWindow;

void PushRecent(SessionState& s, int32_t id) {
  s.recent.push_back(id);
  if (s.recent.size() > 2 * kRecentCap) s.recent.erase(s.recent.begin(), s.recent.end() - kRecentCap);
}

// Scores recorded under the lock for one Score call, turned into replies after it is released.
struct ScoreDelivery {
  ScoreSink* sink = nullptr;
  int top_k = 0;
  std::vector<RawTokenScore> raw;
};

// Batch statistics of one model call that started at t0.
void ObserveCall(metrics::Metrics* m, metrics::BatchKind kind, size_t rows,
                 std::chrono::steady_clock::time_point t0) {
  if (m != nullptr) m->ObserveBatch(kind, static_cast<uint32_t>(rows), SecondsSince(t0));
}

// After the lock is released: counts scored tokens and hands each call its replies.
void PublishScores(metrics::Metrics* m, uint64_t scored, std::vector<ScoreDelivery>* deliveries,
                   const Tokenizer& tokenizer) {
  if (scored > 0 && m != nullptr) m->AddScoredTokens(scored);
  for (ScoreDelivery& d : *deliveries) {
    d.sink->OnTokens(BuildTokenResults(std::move(d.raw), d.top_k, tokenizer));
  }
}

}  // namespace

void Engine::Deliver(Events* events) {
  deliverer_.Join();
  for (auto& e : *events) e();
  events->clear();
}

bool Engine::IdleTooLong(const Job& job, absl::Time now) {
  return job.kind == JobKind::kScore && !job.input_closed && !job.input_paused &&
         now > job.idle_deadline;
}

bool Engine::HasWorkLocked() const {
  if (stop_ || !tasks_.empty()) return true;
  const absl::Time now = absl::Now();
  for (const auto& job : jobs_) {
    const SessionState& s = *job->session;
    if (job->cancel_requested || s.deleted || !job->fail_status.ok() || now > job->deadline)
      return true;
    if (IdleTooLong(*job, now)) return true;
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
    // The sampled tokens reach their streams on the deliverer's thread while the model runs; anything
    // that calls a sink on this thread (Deliver) waits for them first.
    deliverer_.Start(std::move(events));
    events.clear();
    if (!tasks.empty()) deliverer_.Join();
    for (auto& task : tasks) task();  // persistence work (slot export/import/copy), between steps
    tasks.clear();
    RunPlan(&plan);
  }
  Deliver(&events);
  for (auto& task : tasks) task();
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
    ScoreSummaryResult sum = SummarizeScore(job->tokens, job->bytes, job->total_nll, position);
    events->push_back([sink, sum] { sink->OnFinish(sum); });
    // Complete: the whole session may be persisted again (a failed call keeps its resume point, so a
    // client can still resume it).
    if (s.job == nullptr) s.resume_point = -1;
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

void Engine::PlanLocked(Plan* plan, Events* events) {
  const absl::Time now = absl::Now();
  std::vector<std::shared_ptr<Job>> ready;
  std::vector<RowCandidate> candidates;
  auto jobs = jobs_;  // FinishLocked edits jobs_
  DrawTokensLocked(jobs, now);
  for (const std::shared_ptr<Job>& job : jobs) {
    SessionState& s = *job->session;
    if (s.deleted) {
      job->engine_cancelled = true;
      // A session dropped for a reason (its lease went to another replica) says so; else deleted.
      FinishLocked(job,
                   job->fail_status.ok() ? absl::CancelledError("the session was deleted")
                                         : job->fail_status,
                   events);
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
    if (IdleTooLong(*job, now)) {
      // Its input ends here: the tokens already accepted are still read (nothing accepted is lost),
      // then the call ends with DEADLINE_EXCEEDED.
      job->input_closed = true;
      job->idle_expired = true;
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
        job->idle_deadline = IdleDeadline();  // the client may send again: its silence counts from now
        ScoreSink* sink = job->score_sink;
        events->push_back([sink] { sink->OnInputReady(); });
      }
      if (s.pending.empty()) {
        if (job->input_closed) {
          FinishLocked(job,
                       job->idle_expired
                           ? absl::DeadlineExceededError(absl::StrCat(
                                 "the Score call received no text for ",
                                 options_.idle_call_timeout_ms / 1000.0,
                                 " s (--idle_timeout_s) while the server waited for it; the tokens "
                                 "it had sent were read into the session (text after its last "
                                 "newline was not). Send text more often, or close the input when done"))
                           : absl::OkStatus(),
                       events);
        }
        continue;
      }
    }
    ready.push_back(job);
    candidates.push_back(RowCandidate{s.fed, s.pending.size(),
                                      job->kind == JobKind::kScore && !job->input_closed});
  }
  const BatchPlan batch = planner_.Plan(candidates);
  // Fresh sessions get a slot (initialised by the executor before the model runs).
  auto give_slot = [&](const std::shared_ptr<Job>& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto fresh = sessions_.EnsureSlot(*job->session);
    if (!fresh.ok()) {
      FinishLocked(job, fresh.status(), events);
      return false;
    }
    if (*fresh) plan->init_slots.push_back(job->session->slot);
    return true;
  };
  // A planned row's session, with its slot, once its call has started (null: the call has failed).
  auto start_row = [&](const std::shared_ptr<Job>& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> SessionState* {
    if (!give_slot(job)) return nullptr;
    RecordStartedLocked(*job, now);
    return job->session.get();
  };
  // The widest top-k a score or span call's Score rows ask for.
  auto widen_top_k = [](const Job& job, int* top_k) {
    if (job.kind == JobKind::kScore && !job.omit_tokens) *top_k = std::max(*top_k, job.top_k);
  };
  for (size_t i : batch.decode) {
    const auto& job = ready[i];
    SessionState* started = start_row(job);
    if (started == nullptr) continue;
    SessionState& s = *started;
    plan->decode_jobs.push_back(job);
    plan->decode_rows.push_back(DecodeRow{s.slot, s.pending.front().id, s.fed});
  }
  for (size_t k = 0; k < batch.span.size(); ++k) {
    const auto& job = ready[batch.span[k]];
    SessionState* started = start_row(job);
    if (started == nullptr) continue;
    SessionState& s = *started;
    SpanRow row;
    row.slot = s.slot;
    row.start = s.fed;
    const size_t n = batch.span_tokens[k];
    row.tokens.reserve(n);
    for (size_t t = 0; t < n; ++t) row.tokens.push_back(s.pending[t].id);
    if (job->kind == JobKind::kScore) plan->span_all_positions = true;
    plan->span_jobs.push_back(job);
    plan->span_rows.push_back(std::move(row));
    widen_top_k(*job, &plan->span_top_k);
  }
  const size_t w = static_cast<size_t>(window_);
  for (size_t i : batch.score) {
    const auto& job = ready[i];
    SessionState* started = start_row(job);
    if (started == nullptr) continue;
    SessionState& s = *started;
    ScoreBlocksRow row;
    row.slot = s.slot;
    row.start = s.fed;
    row.tokens.reserve(batch.blocks * w);
    for (size_t k = 0; k < batch.blocks * w; ++k) row.tokens.push_back(s.pending[k].id);
    plan->score_jobs.push_back(job);
    plan->score_rows.push_back(std::move(row));
    widen_top_k(*job, &plan->score_top_k);
  }
}

void Engine::RunPlan(Plan* plan) {
  if (!plan->init_slots.empty()) {
    absl::Status init = backend_->InitSlots(plan->init_slots);
    if (!init.ok()) {
      // Nothing ran on these sessions yet: fail their calls; their slots stay theirs and are
      // initialised again on the next attempt.
      Events events;
      {
        absl::MutexLock lock(&mu_);
        for (auto* jobs : {&plan->decode_jobs, &plan->score_jobs}) {
          for (const auto& job : *jobs) {
            SessionState& s = *job->session;
            if (std::find(plan->init_slots.begin(), plan->init_slots.end(), s.slot) !=
                plan->init_slots.end()) {
              sessions_.Erase(s.id);
              s.deleted = true;
              FinishLocked(job, init, &events);
            }
          }
        }
      }
      Deliver(&events);
      return;
    }
  }
  if (!plan->decode_rows.empty() && !plan->span_rows.empty() && options_.mixed_batches &&
      backend_->SupportsMixedCalls()) {
    RunDecodeAndSpans(plan);
  } else {
    RunDecode(plan);
    RunSpans(plan);
  }
  RunScore(plan);
}

void Engine::RunDecodeAndSpans(Plan* plan) {
  const int top_k = plan->span_all_positions ? plan->span_top_k : 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto both = backend_->DecodeAndFeedSpans(plan->decode_rows, plan->span_rows, top_k, plan->span_all_positions);
  // One call: observed as the decode step it is (its span rows are counted in the executor's stats).
  ObserveCall(options_.metrics, metrics::BatchKind::kDecode, plan->decode_rows.size(), t0);
  absl::StatusOr<std::vector<DecodeResult>> decoded =
      both.ok() ? absl::StatusOr<std::vector<DecodeResult>>(std::move(both->decode)) : both.status();
  absl::StatusOr<std::vector<SpanResult>> spanned =
      both.ok() ? absl::StatusOr<std::vector<SpanResult>>(std::move(both->spans)) : both.status();
  ApplyDecode(plan, decoded);
  ApplySpans(plan, spanned, top_k);
}

void Engine::RunDecode(Plan* plan) {
  if (plan->decode_rows.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  auto results = backend_->DecodeStep(plan->decode_rows);
  ObserveCall(options_.metrics, metrics::BatchKind::kDecode, plan->decode_rows.size(), t0);
  ApplyDecode(plan, results);
}

void Engine::ApplyDecode(Plan* plan, absl::StatusOr<std::vector<DecodeResult>>& results) {
  stats_.RecordDecode(static_cast<uint32_t>(plan->decode_rows.size()));
  uint64_t scored = 0;
  Events events;
  std::vector<ScoreDelivery> deliveries;
  std::vector<std::shared_ptr<SessionState>> checkpoint;  // sessions due for a checkpoint
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < plan->decode_jobs.size(); ++i) {
      const auto& job = plan->decode_jobs[i];
      if (job->finished || job->session->deleted) continue;
      SessionState& s = *job->session;
      if (!results.ok()) {
        s.damaged = true;
        FinishLocked(job, results.status(), &events);
        continue;
      }
      const PendingToken p = s.pending.front();
      if (p.report && !s.next_logprobs.empty()) {
        RawTokenScore t;
        t.position = static_cast<uint64_t>(s.fed);
        t.token_id = p.id;
        t.byte_begin = p.begin;
        t.byte_end = p.end;
        t.nll = -s.next_logprobs[p.id];
        job->tokens++;
        scored++;
        job->total_nll += t.nll;
        if (!job->omit_tokens) {
          // The distribution is replaced below: hand the old one to the reply builder.
          if (job->top_k > 0) {
            t.dist = std::make_shared<const std::vector<float>>(std::move(s.next_logprobs));
          }
          deliveries.push_back(ScoreDelivery{job->score_sink, job->top_k, {}});
          deliveries.back().raw.push_back(std::move(t));
        }
      }
      if (p.id != backend_->metadata().bos_id || s.fed != 0) PushRecent(s, p.id);
      s.next_logprobs = std::move((*results)[i].logprobs);
      if (LogFedLocked(s, s.fed, &p.id, 1)) checkpoint.push_back(job->session);
      s.fed++;
      s.pending.pop_front();
    }
  }
  TakeCheckpoints(checkpoint);
  Deliver(&events);
  PublishScores(options_.metrics, scored, &deliveries, *tokenizer_);
}

void Engine::RunScore(Plan* plan) {
  if (plan->score_rows.empty()) return;
  const int top_k = plan->score_top_k;
  const auto t0 = std::chrono::steady_clock::now();
  auto results = backend_->ScoreBlocks(plan->score_rows, top_k);
  const size_t n = plan->score_rows[0].tokens.size();
  stats_.RecordScore(static_cast<uint32_t>(plan->score_rows.size()), n * plan->score_rows.size());
  ObserveCall(options_.metrics, metrics::BatchKind::kScoreBlock, plan->score_rows.size(), t0);
  std::vector<const std::vector<int32_t>*> fed;
  for (const auto& row : plan->score_rows) fed.push_back(&row.tokens);
  ApplyFed(plan->score_jobs, fed, results, top_k);
}

void Engine::RunSpans(Plan* plan) {
  if (plan->span_rows.empty()) return;
  const int top_k = plan->span_all_positions ? plan->span_top_k : 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto results = backend_->FeedSpans(plan->span_rows, top_k, plan->span_all_positions);
  ObserveCall(options_.metrics, metrics::BatchKind::kSpan, plan->span_rows.size(), t0);
  ApplySpans(plan, results, top_k);
}

void Engine::ApplySpans(Plan* plan, absl::StatusOr<std::vector<SpanResult>>& results, int top_k) {
  std::vector<const std::vector<int32_t>*> fed;
  size_t tokens = 0;
  for (const auto& row : plan->span_rows) {
    fed.push_back(&row.tokens);
    tokens += row.tokens.size();
  }
  stats_.RecordSpan(static_cast<uint32_t>(plan->span_rows.size()), tokens);
  ApplyFed(plan->span_jobs, fed, results, top_k);
}

void Engine::ApplyFed(const std::vector<std::shared_ptr<Job>>& jobs,
                      const std::vector<const std::vector<int32_t>*>& fed_tokens,
                      absl::StatusOr<std::vector<ScoreBlocksResult>>& results, int top_k) {
  uint64_t scored = 0;
  Events events;
  std::vector<ScoreDelivery> deliveries;
  std::vector<std::shared_ptr<SessionState>> checkpoint;  // sessions due for a checkpoint
  {
    absl::MutexLock lock(&mu_);
    for (size_t row = 0; row < jobs.size(); ++row) {
      const auto& job = jobs[row];
      const size_t n = fed_tokens[row]->size();
      if (job->finished || job->session->deleted) continue;
      SessionState& s = *job->session;
      if (!results.ok()) {
        s.damaged = true;
        FinishLocked(job, results.status(), &events);
        continue;
      }
      ScoreBlocksResult& r = (*results)[row];
      const bool want = job->kind == JobKind::kScore;
      ScoreDelivery d{job->score_sink, job->top_k, {}};
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
        RawTokenScore t;
        t.position = static_cast<uint64_t>(s.fed) + i;
        t.token_id = p.id;
        t.byte_begin = p.begin;
        t.byte_end = p.end;
        t.nll = -logprob;
        if (job->top_k > 0) {
          if (i == 0) {
            t.dist = std::make_shared<const std::vector<float>>(s.next_logprobs);
          } else {
            const size_t at = (i - 1) * top_k;
            const size_t k = std::min<size_t>(job->top_k, top_k);
            t.top_ids.assign(r.topk_ids.begin() + at, r.topk_ids.begin() + at + k);
            t.top_logprobs.assign(r.topk_logprobs.begin() + at, r.topk_logprobs.begin() + at + k);
          }
        }
        d.raw.push_back(std::move(t));
      }
      s.next_logprobs = std::move(r.next_logprobs);
      if (LogFedLocked(s, s.fed, fed_tokens[row]->data(), n)) {
        checkpoint.push_back(job->session);
      }
      s.fed += static_cast<int64_t>(n);
      s.pending.erase(s.pending.begin(), s.pending.begin() + n);
      if (!d.raw.empty()) deliveries.push_back(std::move(d));
    }
  }
  TakeCheckpoints(checkpoint);
  Deliver(&events);
  PublishScores(options_.metrics, scored, &deliveries, *tokenizer_);
}

}  // namespace brt
