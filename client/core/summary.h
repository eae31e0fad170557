// Summary statistics of scored tokens, with the meaning of brt.v1.ScoreSummary
// (proto/brt/v1/brt.proto): NLL in nats, perplexity exp(mean NLL), bits per token = mean NLL / ln
// 2, bits per byte = total NLL / ln 2 / bytes. A summary received from the server is kept exactly
// as sent; Of() computes one for totals over several files or over a chosen subset of tokens. Plain
// value type; thread-compatible.
#ifndef BRT_CLIENT_CORE_SUMMARY_H_
#define BRT_CLIENT_CORE_SUMMARY_H_

#include <cstdint>

#include "nlohmann/json.hpp"

namespace brt::client {

struct Summary {
  uint64_t tokens = 0;
  uint64_t bytes = 0;
  double total_nll = 0;  // nats
  double mean_nll = 0;
  double perplexity = 0;
  double bits_per_token = 0;
  double bits_per_byte = 0;
  uint64_t position = 0;  // the session's position after the call (0 for totals)

  // Derives mean, perplexity and bits from the three counts (position 0).
  static Summary Of(uint64_t tokens, uint64_t bytes, double total_nll);
};

// Sums tokens, bytes and NLL of the parts and derives the rest.
Summary Total(const Summary* parts, size_t n);

// The field names of brt.v1.ScoreSummary: tokens, bytes, total_nll, mean_nll, perplexity,
// bits_per_token, bits_per_byte, position.
nlohmann::json SummaryToJson(const Summary& s);

}  // namespace brt::client

#endif  // BRT_CLIENT_CORE_SUMMARY_H_
