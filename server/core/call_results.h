// Call results: turning what the model computed (token ids, log-probabilities) into what a caller
// receives (pieces, byte spans, top-k alternatives, summaries). The executor calls these after it has
// released the engine lock, so building strings and sorting vocabularies never blocks RPC threads.
//
// Thread safety: stateless functions; safe from any thread.
#ifndef BRT_SERVER_CORE_CALL_RESULTS_H_
#define BRT_SERVER_CORE_CALL_RESULTS_H_

#include <cstdint>
#include <vector>

#include "server/core/call_types.h"
#include "server/tokenizer/tokenizer.h"

namespace brt {

// The k most likely tokens of a distribution, most likely first (ties: lower id first).
std::vector<AlternativeResult> TopKOf(const std::vector<float>& logprobs, int k,
                                      const Tokenizer& tokenizer);

// Perplexity, bits per token and per byte from a call's totals; `position` is the session's position.
ScoreSummaryResult SummarizeScore(uint64_t tokens, uint64_t bytes, double total_nll, uint64_t position);

// A scored token as the executor records it under the lock: no strings yet.
struct RawTokenScore {
  uint64_t position = 0;
  int32_t token_id = 0;
  uint64_t byte_begin = 0;
  uint64_t byte_end = 0;
  float nll = 0;
  // Alternatives: either from the model's top-k (ids/logprobs, already sorted) or, for a token fed by
  // decode, from the full distribution before it (`dist`, then top_k of it is taken here).
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
  std::shared_ptr<const std::vector<float>> dist;
};

// Fills pieces and alternatives (k = top_k) for a batch of raw scores.
std::vector<TokenScoreResult> BuildTokenResults(std::vector<RawTokenScore> raw, int top_k,
                                                const Tokenizer& tokenizer);

}  // namespace brt

#endif  // BRT_SERVER_CORE_CALL_RESULTS_H_
