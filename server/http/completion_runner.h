// Runs one prompt of a completion request against the Engine, on the calling (HTTP handler) thread:
// picks the session (a temporary one, the caller's, or a fork of it), feeds the prompt through a Score
// call (whose per-token scores are the prompt logprobs when echo is on), then samples the completion
// through a Generate call in the same session. Results go to a CompletionObserver as they arrive, so a
// whole book's prompt logprobs pass through in constant memory when the observer streams them.
//
// Thread safety: RunCompletion may run on many threads at once (the Engine is thread-safe); one
// observer belongs to one run.
#ifndef BRT_SERVER_HTTP_COMPLETION_RUNNER_H_
#define BRT_SERVER_HTTP_COMPLETION_RUNNER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/engine.h"
#include "server/http/completion_request.h"

namespace brt {
namespace http {

// A scored or generated token as the HTTP edge keeps it: numbers only (pieces are looked up when the
// response is written), about 24 bytes plus 8 per alternative.
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  uint64_t offset = 0;  // byte offset of the token's text in the choice's text
  std::vector<std::pair<int32_t, float>> top;
};

class CompletionObserver {
 public:
  virtual ~CompletionObserver() = default;
  // Echoed prompt text and the scores of its tokens, in order, in one or more calls (the text of a
  // token-id prompt is its detokenization). Return false to stop the run (the client went away).
  virtual bool OnPrompt(std::string_view text, std::vector<TokenLogprob> tokens) = 0;
  // A generated text delta (may be empty while a stop sequence is pending) and its token.
  virtual bool OnGenerated(std::string_view text, const TokenLogprob& token) = 0;
};

struct CompletionOutcome {
  std::string session_id;  // the session it ran in, when it persists (session_id or fork); else empty
  uint64_t session_position = 0;
  FinishReason finish = FinishReason::kUnspecified;
  std::string tail_text;  // text released at the end (held back while it could start a stop sequence)
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  uint32_t cached_tokens = 0;  // prompt tokens taken from the prefix cache instead of read again
};

class PrefixCache;

// Runs `prompt` as `request` says. Errors are the Engine's (NOT_FOUND session, RESOURCE_EXHAUSTED,
// UNAVAILABLE ...), or CANCELLED when the observer stopped it. A temporary session is always deleted.
// With a cache (may be null), a temporary session starts from the longest cached prefix of the prompt
// and leaves its own prompt's checkpoint in the cache.
absl::StatusOr<CompletionOutcome> RunCompletion(Engine& engine, const CompletionRequest& request,
                                                const PromptInput& prompt, absl::Time deadline,
                                                CompletionObserver& observer,
                                                PrefixCache* cache = nullptr);

}  // namespace http
}  // namespace brt

#endif  // BRT_SERVER_HTTP_COMPLETION_RUNNER_H_
