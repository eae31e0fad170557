#include "server/core/call_results.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace brt {
namespace {
constexpr double kLn2 = 0.69314718055994530942;
}  // namespace

std::vector<AlternativeResult> TopKOf(const std::vector<float>& logprobs, int k,
                                      const Tokenizer& tokenizer) {
  std::vector<AlternativeResult> out;
  if (k <= 0 || logprobs.empty()) return out;
  k = std::min<int>(k, static_cast<int>(logprobs.size()));
  std::vector<int32_t> idx(logprobs.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return logprobs[a] > logprobs[b] || (logprobs[a] == logprobs[b] && a < b);
  });
  out.reserve(k);
  for (int i = 0; i < k; ++i) {
    out.push_back(AlternativeResult{idx[i], tokenizer.PieceBytes(idx[i]), logprobs[idx[i]]});
  }
  return out;
}

ScoreSummaryResult SummarizeScore(uint64_t tokens, uint64_t bytes, double total_nll,
                                  uint64_t position) {
  ScoreSummaryResult sum;
  sum.tokens = tokens;
  sum.bytes = bytes;
  sum.total_nll = total_nll;
  sum.mean_nll = tokens > 0 ? total_nll / static_cast<double>(tokens) : 0.0;
  sum.perplexity = std::exp(sum.mean_nll);
  sum.bits_per_token = sum.mean_nll / kLn2;
  sum.bits_per_byte = bytes > 0 ? total_nll / kLn2 / static_cast<double>(bytes) : 0.0;
  sum.position = position;
  return sum;
}

std::vector<TokenScoreResult> BuildTokenResults(std::vector<RawTokenScore> raw, int top_k,
                                                const Tokenizer& tokenizer) {
  std::vector<TokenScoreResult> out;
  out.reserve(raw.size());
  for (RawTokenScore& r : raw) {
    TokenScoreResult t;
    t.position = r.position;
    t.token_id = r.token_id;
    t.piece = tokenizer.PieceBytes(r.token_id);
    t.byte_begin = r.byte_begin;
    t.byte_end = r.byte_end;
    t.nll = r.nll;
    if (top_k > 0) {
      if (r.dist != nullptr) {
        t.top = TopKOf(*r.dist, top_k, tokenizer);
      } else {
        for (size_t j = 0; j < r.top_ids.size() && static_cast<int>(j) < top_k; ++j) {
          t.top.push_back(AlternativeResult{r.top_ids[j], tokenizer.PieceBytes(r.top_ids[j]),
                                            r.top_logprobs[j]});
        }
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace brt
