// The types a Score or Generate call speaks in: options, per-token results, summaries, and the sinks
// that receive them. Plain data (no behaviour) shared by the engine, the executor and the edges (gRPC,
// HTTP).
//
// Thread safety: plain structs; a sink's methods are called from one thread at a time (see each sink).
#ifndef BRT_SERVER_CORE_CALL_TYPES_H_
#define BRT_SERVER_CORE_CALL_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/sampling_params.h"

namespace brt {

struct SessionInfo {
  std::string id;
  std::string label;
  uint64_t tokens_consumed = 0;
  uint64_t position = 1;
  uint32_t block_offset = 1;
  uint64_t state_bytes = 0;
  std::string device;
  int64_t created_unix_ms = 0;
  int64_t last_used_unix_ms = 0;
  SamplingOverrides default_sampling;
  bool busy = false;
  // Earliest position RewindSession (or ForkSession at a position) can reach; 0 = none.
  uint64_t earliest_rewind_position = 0;
};

struct AlternativeResult {
  int32_t token_id = 0;
  std::string piece;
  float logprob = 0;
};

struct TokenScoreResult {
  uint64_t position = 0;
  int32_t token_id = 0;
  std::string piece;
  uint64_t byte_begin = 0;
  uint64_t byte_end = 0;
  float nll = 0;
  std::vector<AlternativeResult> top;
};

struct ScoreSummaryResult {
  uint64_t tokens = 0;
  uint64_t bytes = 0;
  double total_nll = 0;
  double mean_nll = 0;
  double perplexity = 1;
  double bits_per_token = 0;
  double bits_per_byte = 0;
  uint64_t position = 0;
};

struct ScoreOptions {
  int32_t top_k = 0;
  bool omit_tokens = false;
  absl::Time deadline = absl::InfiniteFuture();
};

// Receives a Score call's results, in order. OnFinish is called exactly once, last; after it no
// other method is called. OnInputReady follows an Append that returned false, once the backlog has
// drained.
class ScoreSink {
 public:
  virtual ~ScoreSink() = default;
  virtual void OnTokens(std::vector<TokenScoreResult> tokens) = 0;
  virtual void OnInputReady() = 0;
  virtual void OnFinish(absl::StatusOr<ScoreSummaryResult> summary) = 0;
};

enum class FinishReason {
  kUnspecified = 0,
  kLength = 1,
  kStopSequence = 2,
  kEos = 3,
  kCancelled = 4
};

struct GeneratedToken {
  std::string text;  // whole UTF-8 delta (may be empty)
  int32_t token_id = 0;
  float logprob = 0;
  uint64_t position = 0;
  std::string bytes;
  // The most likely tokens of the distribution this token was drawn from (before sampling
  // transforms), most likely first; GenerateParams::top_logprobs of them (empty when 0).
  std::vector<AlternativeResult> top;
};

struct GenerateSummary {
  FinishReason reason = FinishReason::kUnspecified;
  std::string text;  // held-back text released at the end
  uint32_t prompt_tokens = 0;
  uint32_t generated_tokens = 0;
  uint64_t session_position = 0;
};

struct GenerateParams {
  std::string prompt;
  // The prompt as token ids instead of text (then `prompt` must be empty): each in [0, vocab_size).
  std::optional<std::vector<int32_t>> prompt_tokens;
  // Alternatives reported with each generated token (GeneratedToken::top), at most
  // EngineOptions::max_top_k.
  uint32_t top_logprobs = 0;
  std::optional<uint32_t> max_tokens;
  SamplingOverrides sampling;
  absl::Time deadline = absl::InfiniteFuture();
};

// Receives a Generate call's results. OnFinish is called exactly once, last.
class GenerateSink {
 public:
  virtual ~GenerateSink() = default;
  virtual void OnToken(GeneratedToken token) = 0;
  virtual void OnFinish(absl::StatusOr<GenerateSummary> summary) = 0;
};

// SaveSession's result.
struct SavedSession {
  std::string key;    // the snapshot's key in the store (the session id); empty when not stored
  std::string bytes;  // the encoded snapshot, when asked for
  uint64_t size_bytes = 0;
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_CALL_TYPES_H_
