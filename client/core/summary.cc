#include "client/core/summary.h"

#include <cmath>

namespace brt::client {

Summary Summary::Of(uint64_t tokens, uint64_t bytes, double total_nll) {
  Summary s;
  s.tokens = tokens;
  s.bytes = bytes;
  s.total_nll = total_nll;
  s.mean_nll = tokens == 0 ? 0.0 : total_nll / static_cast<double>(tokens);
  s.perplexity = std::exp(s.mean_nll);
  s.bits_per_token = s.mean_nll / std::log(2.0);
  s.bits_per_byte = bytes == 0 ? 0.0 : total_nll / std::log(2.0) / static_cast<double>(bytes);
  return s;
}

Summary Total(const Summary* parts, size_t n) {
  uint64_t tokens = 0, bytes = 0;
  double nll = 0;
  for (size_t i = 0; i < n; ++i) {
    tokens += parts[i].tokens;
    bytes += parts[i].bytes;
    nll += parts[i].total_nll;
  }
  return Summary::Of(tokens, bytes, nll);
}

nlohmann::json SummaryToJson(const Summary& s) {
  return {{"tokens", s.tokens},
          {"bytes", s.bytes},
          {"total_nll", s.total_nll},
          {"mean_nll", s.mean_nll},
          {"perplexity", s.perplexity},
          {"bits_per_token", s.bits_per_token},
          {"bits_per_byte", s.bits_per_byte},
          {"position", s.position}};
}

}  // namespace brt::client
