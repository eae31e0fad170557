// POST /v1/completions: parse, run each prompt (completion_runner.h), answer as one JSON document
// written in slices, or as server-sent events when "stream" is true.
#include <algorithm>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/http/completion_request.h"
#include "server/http/completion_response.h"
#include "server/http/completion_runner.h"
#include "server/http/handlers.h"
#include "server/http/http_errors.h"
#include "server/core/client_text.h"

namespace brt {
namespace http {
namespace {

// Tokens per slice of the logprobs arrays when a response is written.
constexpr size_t kSliceTokens = 2048;

// Keeps one prompt's whole result (non-streaming responses).
class Collector final : public CompletionObserver {
 public:
  bool OnPrompt(std::string_view text, std::vector<TokenLogprob> tokens) override {
    text_.append(text);
    for (TokenLogprob& t : tokens) tokens_.push_back(std::move(t));
    return true;
  }
  bool OnGenerated(std::string_view text, const TokenLogprob& token) override {
    text_.append(text);
    tokens_.push_back(token);
    return true;
  }
  std::string text_;
  std::vector<TokenLogprob> tokens_;
  absl::StatusOr<CompletionOutcome> outcome_ = absl::UnknownError("not run");
};

// Writes the events of one prompt as server-sent events (streaming responses): generated tokens one
// per event, or with stream_interval N > 1 the first alone and then N per event (Flush sends the rest).
class SseWriter final : public CompletionObserver {
 public:
  SseWriter(httplib::DataSink& sink, const std::string& head, int index, bool logprobs,
            uint32_t stream_interval, const Tokenizer& tokenizer)
      : sink_(sink), head_(head), index_(index), logprobs_(logprobs),
        stream_interval_(std::max<uint32_t>(1, stream_interval)), tokenizer_(tokenizer) {}

  bool OnPrompt(std::string_view text, std::vector<TokenLogprob> tokens) override {
    if (!tokens.empty() && !logprobs_) return sink_.is_writable();  // scores nobody asked for
    return Chunk(text, tokens.empty() ? nullptr : &tokens, "null");
  }
  bool OnGenerated(std::string_view text, const TokenLogprob& token) override {
    pending_text_.append(text);
    pending_.push_back(token);
    const bool first = !sent_any_;
    if (!first && pending_.size() < stream_interval_) return sink_.is_writable();
    return Flush();
  }
  // Sends the generated tokens not sent yet, if any.
  bool Flush() {
    if (pending_.empty()) return true;
    sent_any_ = true;
    const bool ok = Chunk(pending_text_, logprobs_ ? &pending_ : nullptr, "null");
    pending_.clear();
    pending_text_.clear();
    return ok;
  }
  bool Chunk(std::string_view text, const std::vector<TokenLogprob>* tokens,
             const std::string& finish) {
    std::string event = absl::StrCat("data: {", head_, ",\"choices\":[{\"index\":", index_,
                                     ",\"text\":", JsonString(text), ",\"logprobs\":",
                                     tokens ? LogprobsObject(*tokens, tokenizer_) : "null",
                                     ",\"finish_reason\":", finish, "}]}\n\n");
    return Write(event);
  }
  bool Write(const std::string& s) { return sink_.is_writable() && sink_.write(s.data(), s.size()); }

 private:
  httplib::DataSink& sink_;
  const std::string& head_;
  const int index_;
  const bool logprobs_;
  const uint32_t stream_interval_;
  const Tokenizer& tokenizer_;
  std::string pending_text_;
  std::vector<TokenLogprob> pending_;
  bool sent_any_ = false;
};

std::string Extensions(const CompletionOutcome& o) {
  if (o.session_id.empty()) return "";
  return absl::StrCat(",\"session_id\":", JsonString(o.session_id),
                      ",\"session_position\":", o.session_position);
}

}  // namespace

void HandleCompletions(const HandlerContext& ctx, const Tenant& tenant, const httplib::Request& req,
                       httplib::Response& res) {
  Engine& engine = *ctx.engine;
  CompletionLimits limits;
  limits.max_prompts = ctx.options->max_prompts;
  limits.max_tokens_cap = engine.options().max_tokens_cap;
  limits.max_logprobs = engine.options().max_top_k;
  auto parsed = ParseCompletionRequest(req.body, limits);
  if (!parsed.ok()) return SendError(res, parsed.status());
  auto request = std::make_shared<CompletionRequest>(*std::move(parsed));
  request->tenant = tenant;
  const std::string& served = engine.metadata().name;
  if (!request->model.empty() && request->model != served) {
    return SendError(res, absl::NotFoundError(absl::StrCat(
                              "model: this server serves \"", served, "\", not \"",
                              QuoteClientInput(request->model), "\" (GET /v1/models lists it)")));
  }
  const int32_t vocab = engine.tokenizer().vocab_size();
  for (size_t i = 0; i < request->prompts.size(); ++i) {
    if (!request->prompts[i].ids) continue;
    const std::vector<int32_t>& ids = *request->prompts[i].ids;
    for (size_t k = 0; k < ids.size(); ++k) {
      if (ids[k] >= vocab) {
        return SendError(res, absl::InvalidArgumentError(absl::StrCat(
                                  "prompt", request->prompts.size() > 1 ? absl::StrCat("[", i, "]") : "",
                                  "[", k, "] is ", ids[k], "; token ids must be in [0, ", vocab,
                                  ") for this model's vocabulary (POST /tokenize makes them)")));
      }
    }
  }
  const absl::Time deadline = ctx.options->request_timeout_s > 0
                                  ? absl::Now() + absl::Seconds(ctx.options->request_timeout_s)
                                  : absl::InfiniteFuture();
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  const std::string head = CompletionHead(
      absl::StrCat(ctx.id_prefix, ctx.next_id->fetch_add(1)), created, served);

  if (request->stream) {
    Engine* e = ctx.engine;
    PrefixCache* cache = ctx.prefix_cache;
    const uint32_t interval = request->stream_interval.value_or(ctx.options->stream_interval);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream", [e, cache, request, head, deadline, interval](size_t, httplib::DataSink& sink) {
          uint64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
          for (size_t i = 0; i < request->prompts.size(); ++i) {
            SseWriter writer(sink, head, static_cast<int>(i), request->logprobs.has_value(),
                             interval, e->tokenizer());
            auto outcome = RunCompletion(*e, *request, request->prompts[i], deadline, writer, cache);
            if (sink.is_writable()) writer.Flush();
            if (!outcome.ok()) {
              if (outcome.status().code() != absl::StatusCode::kCancelled || sink.is_writable()) {
                writer.Write(absl::StrCat("data: ", ErrorJson(outcome.status()), "\n\n"));
              }
              break;
            }
            prompt_tokens += outcome->prompt_tokens;
            completion_tokens += outcome->completion_tokens;
            cached_tokens += outcome->cached_tokens;
            std::string last = absl::StrCat(
                "data: {", head, ",\"choices\":[{\"index\":", i,
                ",\"text\":", JsonString(outcome->tail_text), ",\"logprobs\":null,\"finish_reason\":",
                FinishReasonJson(outcome->finish), Extensions(*outcome), "}]}\n\n");
            if (!writer.Write(last)) break;
          }
          if (request->include_usage) {
            std::string usage = absl::StrCat("data: {", head, ",\"choices\":[],\"usage\":",
                                             UsageJson(prompt_tokens, completion_tokens, cached_tokens), "}\n\n");
            sink.write(usage.data(), usage.size());
          }
          static constexpr char kDone[] = "data: [DONE]\n\n";
          sink.write(kDone, sizeof(kDone) - 1);
          sink.done();
          return true;
        });
    return;
  }

  // Non-streaming: the prompts run concurrently (the engine batches them), then the answer.
  auto results = std::make_shared<std::vector<Collector>>(request->prompts.size());
  {
    std::vector<std::thread> workers;
    for (size_t i = 1; i < request->prompts.size(); ++i) {
      workers.emplace_back([&, i] {
        (*results)[i].outcome_ =
            RunCompletion(engine, *request, request->prompts[i], deadline, (*results)[i],
                          ctx.prefix_cache);
      });
    }
    (*results)[0].outcome_ =
        RunCompletion(engine, *request, request->prompts[0], deadline, (*results)[0], ctx.prefix_cache);
    for (std::thread& t : workers) t.join();
  }
  for (const Collector& c : *results) {
    if (!c.outcome_.ok()) return SendError(res, c.outcome_.status());
  }
  const Tokenizer* tok = &engine.tokenizer();
  const bool with_logprobs = request->logprobs.has_value();
  // Written in slices: the document is never whole in memory (a book's prompt logprobs are large).
  res.set_chunked_content_provider(
      "application/json", [results, head, with_logprobs, tok](size_t, httplib::DataSink& sink) {
        auto put = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        uint64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
        if (!put(absl::StrCat("{", head, ",\"choices\":["))) return false;
        for (size_t i = 0; i < results->size(); ++i) {
          Collector& c = (*results)[i];
          const CompletionOutcome& o = *c.outcome_;
          prompt_tokens += o.prompt_tokens;
          completion_tokens += o.completion_tokens;
          cached_tokens += o.cached_tokens;
          if (!put(absl::StrCat(i > 0 ? "," : "", "{\"index\":", i, ",\"text\":",
                                JsonString(c.text_ + o.tail_text), ",\"logprobs\":"))) {
            return false;
          }
          if (!with_logprobs) {
            if (!put("null")) return false;
          } else {
            static constexpr const char* kNames[] = {"{\"tokens\":[", "],\"token_logprobs\":[",
                                                     "],\"top_logprobs\":[", "],\"text_offset\":["};
            for (int f = 0; f < 4; ++f) {
              if (!put(kNames[f])) return false;
              for (size_t b = 0; b < c.tokens_.size(); b += kSliceTokens) {
                std::string slice;
                AppendLogprobsElements(c.tokens_, b, b + kSliceTokens, static_cast<LogprobsField>(f),
                                       *tok, &slice);
                if (!put(slice)) return false;
              }
            }
            if (!put("]}")) return false;
          }
          std::vector<TokenLogprob>().swap(c.tokens_);
          if (!put(absl::StrCat(",\"finish_reason\":", FinishReasonJson(o.finish), Extensions(o),
                                "}"))) {
            return false;
          }
        }
        put(absl::StrCat("],\"usage\":", UsageJson(prompt_tokens, completion_tokens, cached_tokens), "}"));
        sink.done();
        return true;
      });
}

}  // namespace http
}  // namespace brt
