#include "server/http/completion_runner.h"

#include <chrono>
#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/http/prefix_cache.h"
#include "server/persistence/snapshot_store.h"

namespace brt {
namespace http {
namespace {

// Prompt ids per ScoreCall::AppendTokens.
constexpr size_t kFeedIds = 2048;
// Bytes of prompt text per tokenizer call (cut after a newline).
constexpr size_t kTokenizeBytes = 64 << 10;

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
  std::vector<TokenScoreResult> Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](ScoreBridge* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
          return !b->queue_.empty() || b->result_.has_value() || (b->waiting_ && b->input_ready_);
        },
        this));
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

// A prompt as the tokens a session reads: ids, and each token's byte offset in the echoed text.
struct PromptTokens {
  std::vector<int32_t> ids;
  std::vector<uint64_t> offsets;
};

absl::StatusOr<PromptTokens> Tokenize(const Tokenizer& tokenizer, const PromptInput& prompt) {
  PromptTokens out;
  if (prompt.ids) {
    out.ids = *prompt.ids;
    uint64_t at = 0;
    for (int32_t id : out.ids) {
      out.offsets.push_back(at);
      at += tokenizer.PieceBytes(id).size();
    }
    return out;
  }
  // The same tokens a Score call would read from this text: tokens never cross a newline (see
  // IncrementalTokenizer), so the text is encoded in pieces of about kTokenizeBytes cut after a
  // newline. That keeps the tokenizer's temporaries small (one encode of a whole book allocated tens of
  // megabytes at once, which the allocator then kept).
  const std::string_view text = prompt.text;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.size();
    if (end - begin > kTokenizeBytes) {
      const size_t nl = text.rfind('\n', begin + kTokenizeBytes);
      end = (nl != std::string_view::npos && nl >= begin) ? nl + 1 : text.size();
    }
    auto spans = tokenizer.EncodeWithSpans(text.substr(begin, end - begin));
    if (!spans.ok()) return spans.status();
    for (const TokenSpan& t : *spans) {
      out.ids.push_back(t.id);
      out.offsets.push_back(begin + t.begin);
    }
    begin = end;
  }
  return out;
}

// Feeds prompt tokens [from, end) through a Score call; reports their scores (offsets filled in) to
// the observer when echo is on, and keeps a copy in *kept when it is not null.
absl::StatusOr<uint32_t> FeedPrompt(Engine& engine, const std::string& session_id,
                                    const CompletionRequest& request, const PromptTokens& prompt,
                                    size_t from, absl::Time deadline, CompletionObserver& observer,
                                    std::vector<TokenLogprob>* kept) {
  ScoreOptions options;
  options.top_k = request.echo ? static_cast<int32_t>(request.logprobs.value_or(0)) : 0;
  options.omit_tokens = !request.echo;
  options.deadline = deadline;
  ScoreBridge bridge;
  auto call = engine.StartScore(session_id, options, &bridge, request.tenant);
  if (!call.ok()) return call.status();

  bool stopped = false;  // the observer asked to stop
  size_t next = from;    // index of the next scored token in the prompt
  auto deliver = [&](std::vector<TokenScoreResult> scores) {
    if (scores.empty() || stopped || !request.echo) return;
    std::vector<TokenLogprob> out;
    out.reserve(scores.size());
    for (TokenScoreResult& s : scores) {
      TokenLogprob t;
      t.id = s.token_id;
      t.logprob = -s.nll;
      t.offset = next < prompt.offsets.size() ? prompt.offsets[next] : 0;
      ++next;
      t.top.reserve(s.top.size());
      for (const AlternativeResult& a : s.top) t.top.emplace_back(a.token_id, a.logprob);
      out.push_back(std::move(t));
    }
    if (kept != nullptr) kept->insert(kept->end(), out.begin(), out.end());
    if (!observer.OnPrompt("", std::move(out))) {
      stopped = true;
      (*call)->Cancel();
    }
  };
  // Input in slices; wait whenever the engine says to pause.
  absl::Status feed_error;
  for (size_t pos = from; pos < prompt.ids.size() && !stopped && !bridge.result().has_value();
       pos += kFeedIds) {
    const size_t n = std::min(kFeedIds, prompt.ids.size() - pos);
    bridge.SetWaitingForInput(true);
    absl::StatusOr<bool> more = (*call)->AppendTokens(
        std::vector<int32_t>(prompt.ids.begin() + pos, prompt.ids.begin() + pos + n));
    if (!more.ok()) {
      feed_error = more.status();
      break;
    }
    while (!*more && !bridge.input_ready() && !bridge.result().has_value() && !stopped) {
      deliver(bridge.Wait());
    }
    bridge.SetWaitingForInput(false);
  }
  if (feed_error.ok() && !stopped) {
    absl::Status closed = (*call)->CloseInput();
    if (!closed.ok()) feed_error = closed;
  }
  if (!feed_error.ok()) (*call)->Cancel();
  while (!bridge.result().has_value()) deliver(bridge.Wait());
  deliver(bridge.Wait());  // scores that arrived with the end
  if (stopped) return absl::CancelledError("the client went away");
  absl::StatusOr<ScoreSummaryResult> summary = *bridge.result();
  if (!feed_error.ok() && !summary.ok()) return summary.status();  // the call's own reason
  if (!feed_error.ok()) return feed_error;
  if (!summary.ok()) return summary.status();
  return static_cast<uint32_t>(prompt.ids.size() - from);
}

// After a temporary session read the prompt: the prompt, the session's checkpoints inside it (and
// those of the entry it started from, up to where it started) and, when they were computed, the
// prompt's scores become a cache entry.
void RememberPrefix(Engine& engine, PrefixCache& cache, const std::string& session_id,
                    const PromptTokens& prompt, const CompletionRequest& request,
                    const PrefixCache::Hit& reused, std::vector<TokenLogprob> scores) {
  const int64_t prompt_fed = static_cast<int64_t>(prompt.ids.size()) + 1;  // BOS included
  auto own = engine.CheckpointsOf(session_id, prompt_fed, request.tenant);
  if (!own.ok()) return;
  auto e = std::make_shared<PrefixEntry>();
  e->tenant = request.tenant.name;
  const int64_t start = reused.checkpoint != nullptr ? reused.checkpoint->position : 0;
  if (reused.entry != nullptr) {
    for (const auto& c : reused.entry->checkpoints) {
      if (c->position < start) e->checkpoints.push_back(c);
    }
  }
  e->checkpoints.insert(e->checkpoints.end(), own->begin(), own->end());
  if (e->checkpoints.empty()) return;
  if (reused.entry != nullptr && e->checkpoints.back()->position <= start) return;  // nothing new
  e->tokens.reserve(prompt.ids.size() + 1);
  e->tokens.push_back(engine.metadata().bos_id);
  e->tokens.insert(e->tokens.end(), prompt.ids.begin(), prompt.ids.end());
  if (request.echo) {
    e->has_scores = true;
    e->top_k = static_cast<int32_t>(request.logprobs.value_or(0));
    if (reused.entry != nullptr) {
      e->scores.assign(reused.entry->scores.begin(), reused.entry->scores.begin() + (start - 1));
    }
    for (TokenLogprob& t : scores) e->scores.push_back(std::move(t));
    if (e->scores.size() != prompt.ids.size()) return;  // incomplete: do not cache
    for (TokenLogprob& t : e->scores) t.top.resize(std::min<size_t>(t.top.size(), e->top_k));
  }
  cache.Insert(std::move(e));
}

}  // namespace

absl::StatusOr<CompletionOutcome> RunCompletion(Engine& engine, const CompletionRequest& request,
                                                const PromptInput& prompt, absl::Time deadline,
                                                CompletionObserver& observer, PrefixCache* cache) {
  // A session_id that is not loaded here is restored from the snapshot store on first use (GetSession,
  // ForkSession, ...): the store gets what is left of the request's deadline, so a hung store costs this
  // request --http_request_timeout_s and DEADLINE_EXCEEDED, as a gRPC call's deadline does, rather than
  // the store's own timeouts. Without a request timeout the store's own timeouts bound it.
  std::optional<persistence::ScopedStoreDeadline> store_deadline;
  if (deadline != absl::InfiniteFuture()) {
    store_deadline.emplace(std::chrono::steady_clock::now() +
                           std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               absl::ToChronoNanoseconds(deadline - absl::Now())));
  }
  CompletionOutcome outcome;
  auto tokens = Tokenize(engine.tokenizer(), prompt);
  if (!tokens.ok()) return tokens.status();
  const bool temporary = request.session_id.empty();
  const bool caching = temporary && cache != nullptr && cache->enabled();
  // The prefix cache: the longest cached prefix of BOS + prompt whose scores cover what echo needs.
  PrefixCache::Hit reused;
  if (caching) {
    std::vector<int32_t> full;
    full.reserve(tokens->ids.size() + 1);
    full.push_back(engine.metadata().bos_id);
    full.insert(full.end(), tokens->ids.begin(), tokens->ids.end());
    reused = cache->Lookup(request.tenant.name, full, request.echo, static_cast<int32_t>(request.logprobs.value_or(0)));
  }
  // The session: a temporary one (deleted at the end), the caller's, or a fork of the caller's.
  std::string session_id = request.session_id;
  if (temporary) {
    auto created = reused.checkpoint != nullptr
                       ? engine.CreateSessionFromCheckpoint(reused.checkpoint, "http", request.tenant)
                       : engine.CreateSession("http", SamplingOverrides{}, request.tenant);
    if (!created.ok()) return created.status();
    session_id = created->id;
  } else if (request.fork) {
    auto forked = request.position
                      ? engine.ForkSessionAt(session_id, *request.position, request.tenant)
                      : engine.ForkSession(session_id, request.tenant);
    if (!forked.ok()) return forked.status();
    session_id = forked->id;
  } else if (request.position) {
    auto rewound = engine.RewindSession(session_id, *request.position, request.tenant);
    if (!rewound.ok()) return rewound.status();
  }
  struct DeleteTemporary {
    Engine& engine;
    const std::string& id;
    const Tenant& tenant;
    bool on;
    ~DeleteTemporary() {
      if (on) (void)engine.DeleteSession(id, tenant);
    }
  } cleanup{engine, session_id, request.tenant, temporary};
  if (!temporary) outcome.session_id = session_id;

  // The echoed text: the prompt itself, or the detokenized ids.
  std::string echo_text;
  if (request.echo) echo_text = prompt.ids ? engine.tokenizer().Decode(*prompt.ids) : prompt.text;
  if (request.echo && !echo_text.empty() && !observer.OnPrompt(echo_text, {})) {
    return absl::CancelledError("the client went away");
  }
  size_t from = 0;  // prompt tokens already read (from the cache)
  if (reused.checkpoint != nullptr) {
    from = static_cast<size_t>(reused.checkpoint->position) - 1;
    outcome.cached_tokens = static_cast<uint32_t>(from);
    if (request.echo) {
      std::vector<TokenLogprob> scores;
      const size_t k = request.logprobs.value_or(0);
      for (size_t i = 0; i < from; ++i) {
        TokenLogprob t = reused.entry->scores[i];
        t.offset = tokens->offsets[i];
        t.top.resize(std::min(t.top.size(), k));
        scores.push_back(std::move(t));
        if (scores.size() == kFeedIds || i + 1 == from) {
          if (!observer.OnPrompt("", std::move(scores))) {
            return absl::CancelledError("the client went away");
          }
          scores.clear();
        }
      }
    }
  }
  outcome.prompt_tokens = static_cast<uint32_t>(tokens->ids.size());
  if (from < tokens->ids.size()) {
    std::vector<TokenLogprob> kept;
    auto fed = FeedPrompt(engine, session_id, request, *tokens, from, deadline, observer,
                          caching && request.echo ? &kept : nullptr);
    if (!fed.ok()) return fed.status();
    if (caching) RememberPrefix(engine, *cache, session_id, *tokens, request, reused, std::move(kept));
  }
  outcome.finish = FinishReason::kLength;
  if (request.max_tokens > 0) {
    GenerateParams params;
    params.max_tokens = request.max_tokens;
    params.sampling = request.sampling;
    params.deadline = deadline;
    params.top_logprobs = request.logprobs.value_or(0);
    GenerateBridge bridge;
    auto call = engine.StartGenerate(session_id, std::move(params), &bridge, request.tenant);
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
    auto info = engine.GetSession(session_id, request.tenant);
    if (info.ok()) outcome.session_position = info->position;
  }
  return outcome;
}

}  // namespace http
}  // namespace brt
