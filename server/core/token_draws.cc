// The executor's token draws for Generate calls: each generating session's next token, drawn from the
// distribution its last decode step left (Sampler), appended to the session and queued for its stream.
// Several sessions' draws run at once on the backend's workers (ModelBackend::ForEachRow).
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "server/core/call_results.h"
#include "server/core/engine.h"
#include "server/core/engine_internal.h"
#include "server/metrics/metrics.h"

namespace brt {

void Engine::DrawTokensLocked(const std::vector<std::shared_ptr<Job>>& jobs, absl::Time now) {
  // Exactly the calls PlanLocked will sample this round (the same conditions, in its order), so each
  // sampler draws what it would have drawn there: a seed still gives the same tokens.
  std::vector<Job*> due;
  for (const std::shared_ptr<Job>& job : jobs) {
    const SessionState& s = *job->session;
    if (job->kind != JobKind::kGenerate || job->finished || s.deleted || job->cancel_requested ||
        !job->fail_status.ok() || now > job->deadline || !s.pending.empty() || job->drawn >= 0 ||
        job->finishing != FinishReason::kUnspecified || job->generated >= job->max_tokens) {
      continue;
    }
    due.push_back(job.get());
  }
  // One draw, or greedy ones only (an argmax, ~0.5 us: waking the workers would cost more): SampleLocked
  // makes them.
  const size_t sampled = static_cast<size_t>(std::count_if(
      due.begin(), due.end(), [](const Job* job) { return job->sampler->config().temperature > 0.0f; }));
  if (due.size() < 2 || sampled < 2) return;
  backend_->ForEachRow(static_cast<int64_t>(due.size()), [&due](int64_t i) {
    Job& job = *due[static_cast<size_t>(i)];
    job.drawn = job.sampler->Sample(job.session->next_logprobs, job.session->recent);
  });
}

void Engine::SampleLocked(Job& job, Events* events) {
  SessionState& s = *job.session;
  const int32_t token = job.drawn >= 0 ? std::exchange(job.drawn, -1) : job.sampler->Sample(s.next_logprobs, s.recent);
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
  if (job.top_logprobs > 0) {
    // The alternatives are picked outside the lock, from a copy of the distribution.
    auto dist = std::make_shared<const std::vector<float>>(s.next_logprobs);
    const int k = static_cast<int>(job.top_logprobs);
    const Tokenizer* tokenizer = tokenizer_.get();
    events->push_back([sink, out = std::move(out), dist, k, tokenizer]() mutable {
      out.top = TopKOf(*dist, k, *tokenizer);
      sink->OnToken(std::move(out));
    });
    return;
  }
  events->push_back([sink, out = std::move(out)]() mutable { sink->OnToken(std::move(out)); });
}

}  // namespace brt
