// The body of POST /v1/completions (OpenAI's legacy completions API, plus brt extensions), parsed and
// validated into plain structs. Every refusal is INVALID_ARGUMENT naming the field, what it got and
// what is allowed, so that an OpenAI error object can carry it back unchanged.
//
// Accepted fields: model, prompt (a string, a list of strings, a list of token ids, or a list of such
// lists), max_tokens (0 allowed), temperature, top_p, top_k, min_p, seed, stop (string or list),
// stream, stream_options.include_usage, logprobs (0..max_top_k), echo, n (only 1), repetition_penalty,
// and the extensions session_id (continue a brt session), fork (continue a copy of it), position
// (first go back to that earlier position of the session, exactly) and stream_interval (tokens per
// stream event after the first, as GenerateRequest.stream_interval). Fields
// OpenAI defines that change nothing here (user, best_of = 1, frequency/presence penalty = 0,
// logit_bias = {}, suffix = null) are accepted; other values of them are refused.
//
// Thread safety: pure functions and plain data.
#ifndef BRT_SERVER_HTTP_COMPLETION_REQUEST_H_
#define BRT_SERVER_HTTP_COMPLETION_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/sampling_params.h"
#include "server/core/tenant.h"

namespace brt {
namespace http {

// One prompt: text, or token ids.
struct PromptInput {
  std::string text;
  std::optional<std::vector<int32_t>> ids;
};

struct CompletionRequest {
  std::string model;
  std::vector<PromptInput> prompts;  // at least one
  uint32_t max_tokens = 16;          // OpenAI's default
  SamplingOverrides sampling;
  bool stream = false;
  bool include_usage = false;
  std::optional<uint32_t> logprobs;  // number of alternatives per token; unset = no logprobs
  bool echo = false;
  std::string session_id;  // extension: continue this session (one prompt only)
  bool fork = false;       // extension: continue a copy of session_id instead
  // Extension: first rewind session_id (or, with fork, the copy) to this earlier position
  // (Session.position units), exactly, as RewindSession does.
  std::optional<uint64_t> position;
  // Extension: generated tokens per server-sent event after the first (at least 1); unset: the
  // server's --http_stream_interval.
  std::optional<uint32_t> stream_interval;
  // Not from the JSON: whom the request acts for (the server authenticates it before parsing).
  Tenant tenant;
};

struct CompletionLimits {
  uint32_t max_prompts = 32;      // prompts per request
  uint32_t max_tokens_cap = 4096;  // EngineOptions::max_tokens_cap
  uint32_t max_logprobs = 20;      // EngineOptions::max_top_k
};

// Parses the JSON body (already size-checked by the server).
absl::StatusOr<CompletionRequest> ParseCompletionRequest(const std::string& body,
                                                         const CompletionLimits& limits);

}  // namespace http
}  // namespace brt

#endif  // BRT_SERVER_HTTP_COMPLETION_REQUEST_H_
