#include "server/http/completion_runner.h"

#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace brt {
namespace http {
namespace {

// Bytes of prompt text per ScoreCall::Append, and ids per AppendTokens.
constexpr size_t kFeedBytes = 64 << 10;
constexpr size_t kFeedIds = 8192;

// Blocks the handler thread on a Score call's sink.
class ScoreBridge final : public ScoreSink {
 public:
  void OnTokens(std::vector<TokenScoreResult> tokens) override {
    absl::MutexLock lock(&mu_);
    for (TokenScoreResult& t : tokens) queue_.push_back(std::move(t));
  }
  void OnInputReady() override {
    absl::MutexLock lock(&mu_);
    input_ready_ = true;
  }
  void OnFinish(absl::StatusOr<ScoreSummaryResult> summary) override {
    absl::MutexLock lock(&mu_);
    result_ = std::move(summary);
  }
  // Waits until there are scores, the input may resume (when waiting_for_input) or the call ended;
  // moves out the scores.
  std::vector<TokenScoreResult> Wait(bool waiting_for_input) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](ScoreBridge* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
          return !b->queue_.empty() || b->result_.has_value() || (b->waiting_ && b->input_ready_);
        },
        this));
    (void)waiting_for_input;
    std::vector<TokenScoreResult> out(std::make_move_iterator(queue_.begin()),
                                      std::make_move_iterator(queue_.end()));
    queue_.clear();
    return out;
  }
  void SetWaitingForInput(bool waiting) {
    absl::MutexLock lock(&mu_);
    waiting_ = waiting;
    if (waiting) input_ready_ = false;
  }
  bool input_ready() {
    absl::MutexLock lock(&mu_);
    return input_ready_;
  }
  std::optional<absl::StatusOr<ScoreSummaryResult>> result() {
    absl::MutexLock lock(&mu_);
    return result_;
  }

 private:
  absl::Mutex mu_;
  std::deque<TokenScoreResult> queue_ ABSL_GUARDED_BY(mu_);
  bool waiting_ ABSL_GUARDED_BY(mu_) = false;
  bool input_ready_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::StatusOr<ScoreSummaryResult>> result_ ABSL_GUARDED_BY(mu_);
};

// Blocks the handler thread on a Generate call's sink.
class GenerateBridge final : public GenerateSink {
 public:
  void OnToken(GeneratedToken token) override {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(token));
  }
  void OnFinish(absl::StatusOr<GenerateSummary> summary) override {
    absl::MutexLock lock(&mu_);
    result_ = std::move(summary);
  }
  // Waits for tokens or the end; returns the tokens (and sets *done when the call has ended and
  // every token was returned).
  std::vector<GeneratedToken> Wait(std::optional<absl::StatusOr<GenerateSummary>>* done) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](GenerateBridge* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
          return !b->queue_.empty() || b->result_.has_value();
        },
        this));
    std::vector<GeneratedToken> out(std::make_move_iterator(queue_.begin()),
                                    std::make_move_iterator(queue_.end()));
    queue_.clear();
    if (result_.has_value()) *done = result_;
    return out;
  }

 private:
  absl::Mutex mu_;
  std::deque<GeneratedToken> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::StatusOr<GenerateSummary>> result_ ABSL_GUARDED_BY(mu_);
};

std::vector<TokenLogprob> ToLogprobs(std::vector<TokenScoreResult>& scores, uint64_t base) {
  std::vector<TokenLogprob> out;
  out.reserve(scores.size());
  for (TokenScoreResult& s : scores) {
    TokenLogprob t;
    t.id = s.token_id;
    t.logprob = -s.nll;
    t.offset = base + s.byte_begin;
    t.top.reserve(s.top.size());
    for (const AlternativeResult& a : s.top) t.top.emplace_back(a.token_id, a.logprob);
    out.push_back(std::move(t));
  }
  return out;
}

// Feeds the prompt through a Score call. Reports its scores to the observer when echo is on.
absl::StatusOr<uint32_t> FeedPrompt(Engine& engine, const std::string& session_id,
                                    const CompletionRequest& request, const PromptInput& prompt,
                                    absl::Time deadline, CompletionObserver& observer) {
  ScoreOptions options;
  options.top_k = request.echo ? static_cast<int32_t>(request.logprobs.value_or(0)) : 0;
  options.omit_tokens = !request.echo;
  options.deadline = deadline;
  ScoreBridge bridge;
  auto call = engine.StartScore(session_id, options, &bridge);
  if (!call.ok()) return call.status();

  bool stopped = false;  // the observer asked to stop
  auto deliver = [&](std::vector<TokenScoreResult> scores) {
    if (scores.empty() || stopped || !request.echo) return;
    if (!observer.OnPrompt("", ToLogprobs(scores, 0))) {
      stopped = true;
      (*call)->Cancel();
    }
  };
  // Input: text in slices, or ids in slices; wait whenever the engine says to pause.
  absl::Status feed_error;
  const size_t total = prompt.ids ? prompt.ids->size() : prompt.text.size();
  const size_t step = prompt.ids ? kFeedIds : kFeedBytes;
  for (size_t pos = 0; pos < total && !stopped && !bridge.result().has_value(); pos += step) {
    const size_t n = std::min(step, total - pos);
    bridge.SetWaitingForInput(true);
    absl::StatusOr<bool> more =
        prompt.ids ? (*call)->AppendTokens(std::vector<int32_t>(prompt.ids->begin() + pos,
                                                                prompt.ids->begin() + pos + n))
                   : (*call)->Append(std::string_view(prompt.text).substr(pos, n));
    if (!more.ok()) {
      feed_error = more.status();
      break;
    }
    if (*more) bridge.SetWaitingForInput(false);
    while (!*more && !bridge.input_ready() && !bridge.result().has_value() && !stopped) {
      deliver(bridge.Wait(true));
    }
    bridge.SetWaitingForInput(false);
  }
  if (feed_error.ok() && !stopped) {
    absl::Status closed = (*call)->CloseInput();
    if (!closed.ok()) feed_error = closed;
  }
  if (!feed_error.ok()) (*call)->Cancel();
  while (!bridge.result().has_value()) deliver(bridge.Wait(false));
  deliver(bridge.Wait(false));  // scores that arrived with the end
  if (stopped) return absl::CancelledError("the client went away");
  absl::StatusOr<ScoreSummaryResult> summary = *bridge.result();
  if (!feed_error.ok() && !summary.ok()) return summary.status();  // the call's own reason
  if (!feed_error.ok()) return feed_error;
  if (!summary.ok()) return summary.status();
  return static_cast<uint32_t>(summary->tokens);
}

}  // namespace

absl::StatusOr<CompletionOutcome> RunCompletion(Engine& engine, const CompletionRequest& request,
                                                const PromptInput& prompt, absl::Time deadline,
                                                CompletionObserver& observer) {
  CompletionOutcome outcome;
  // The session: a temporary one (deleted at the end), the caller's, or a fork of the caller's.
  std::string session_id = request.session_id;
  bool temporary = false;
  if (session_id.empty()) {
    auto created = engine.CreateSession("http", SamplingOverrides{});
    if (!created.ok()) return created.status();
    session_id = created->id;
    temporary = true;
  } else if (request.fork) {
    auto forked = request.position ? engine.ForkSessionAt(session_id, *request.position)
                                   : engine.ForkSession(session_id);
    if (!forked.ok()) return forked.status();
    session_id = forked->id;
  } else if (request.position) {
    auto rewound = engine.RewindSession(session_id, *request.position);
    if (!rewound.ok()) return rewound.status();
  }
  struct DeleteTemporary {
    Engine& engine;
    const std::string& id;
    bool on;
    ~DeleteTemporary() {
      if (on) (void)engine.DeleteSession(id);
    }
  } cleanup{engine, session_id, temporary};
  if (!temporary) outcome.session_id = session_id;

  // The echoed text: the prompt itself, or the detokenized ids.
  std::string echo_text;
  if (request.echo) echo_text = prompt.ids ? engine.tokenizer().Decode(*prompt.ids) : prompt.text;
  if (request.echo && !echo_text.empty() && !observer.OnPrompt(echo_text, {})) {
    return absl::CancelledError("the client went away");
  }
  const bool has_prompt = prompt.ids ? !prompt.ids->empty() : !prompt.text.empty();
  if (has_prompt) {
    auto fed = FeedPrompt(engine, session_id, request, prompt, deadline, observer);
    if (!fed.ok()) return fed.status();
    outcome.prompt_tokens = *fed;
  }
  outcome.finish = FinishReason::kLength;
  if (request.max_tokens > 0) {
    GenerateParams params;
    params.max_tokens = request.max_tokens;
    params.sampling = request.sampling;
    params.deadline = deadline;
    params.top_logprobs = request.logprobs.value_or(0);
    GenerateBridge bridge;
    auto call = engine.StartGenerate(session_id, std::move(params), &bridge);
    if (!call.ok()) return call.status();
    // Offsets of generated tokens continue after the echoed text.
    uint64_t offset = echo_text.size();
    bool stopped = false;
    std::optional<absl::StatusOr<GenerateSummary>> done;
    while (!done.has_value()) {
      for (GeneratedToken& g : bridge.Wait(&done)) {
        if (stopped) continue;
        TokenLogprob t;
        t.id = g.token_id;
        t.logprob = g.logprob;
        t.offset = offset;
        offset += g.bytes.size();
        for (const AlternativeResult& a : g.top) t.top.emplace_back(a.token_id, a.logprob);
        outcome.completion_tokens++;
        if (!observer.OnGenerated(g.text, t)) {
          stopped = true;
          (*call)->Cancel();
        }
      }
    }
    if (stopped) return absl::CancelledError("the client went away");
    if (!done->ok()) return done->status();
    outcome.finish = (*done)->reason;
    outcome.tail_text = (*done)->text;
    outcome.session_position = (*done)->session_position;
  }
  if (!temporary) {
    auto info = engine.GetSession(session_id);
    if (info.ok()) outcome.session_position = info->position;
  }
  return outcome;
}

}  // namespace http
}  // namespace brt
