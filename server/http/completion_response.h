// JSON text of /v1/completions responses (OpenAI's text_completion objects), written piece by piece
// so that a response carrying a whole book's prompt logprobs is produced in slices instead of one
// document tree in memory.
//
// Thread safety: pure functions.
#ifndef BRT_SERVER_HTTP_COMPLETION_RESPONSE_H_
#define BRT_SERVER_HTTP_COMPLETION_RESPONSE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "server/core/call_types.h"
#include "server/http/completion_runner.h"
#include "server/tokenizer/tokenizer.h"

namespace brt {
namespace http {

// A JSON string literal of arbitrary bytes (invalid UTF-8 replaced by U+FFFD).
std::string JsonString(std::string_view bytes);

// "length" | "stop" (stop sequence or end of text) | null (still running, cancelled).
std::string FinishReasonJson(FinishReason reason);

// The four parallel arrays of a choice's "logprobs" object.
enum class LogprobsField { kTokens, kTokenLogprobs, kTopLogprobs, kTextOffset };
// Appends the elements [begin, end) of one array, comma-separated (a leading comma when begin > 0).
void AppendLogprobsElements(const std::vector<TokenLogprob>& tokens, size_t begin, size_t end,
                            LogprobsField field, const Tokenizer& tokenizer, std::string* out);
// A whole "logprobs" object for a few tokens (stream chunks).
std::string LogprobsObject(const std::vector<TokenLogprob>& tokens, const Tokenizer& tokenizer);

// The fields every completion object starts with: "id", "object", "created", "model".
std::string CompletionHead(const std::string& id, int64_t created, const std::string& model);

// A usage object; cached_tokens (prompt tokens reused from the prefix cache) goes in
// prompt_tokens_details, as OpenAI reports cache hits.
std::string UsageJson(uint64_t prompt_tokens, uint64_t completion_tokens, uint64_t cached_tokens);

}  // namespace http
}  // namespace brt

#endif  // BRT_SERVER_HTTP_COMPLETION_RESPONSE_H_
