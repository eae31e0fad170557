// Sampler: picks the next token from a distribution of log-probabilities with temperature (0 =
// greedy), top-k, top-p, min-p and a CTRL-style repetition penalty, using its own seeded generator
// (std::mt19937_64 with a portable uniform conversion), so the same seed and inputs give the same
// tokens on every run and platform.
//
// Thread safety: not thread-safe; one per generation request, used by the executor thread.
#ifndef BRT_SERVER_CORE_SAMPLER_H_
#define BRT_SERVER_CORE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "server/core/sampling_params.h"

namespace brt {

class Sampler {
 public:
  explicit Sampler(const SamplingConfig& config);

  // logprobs: the model's distribution over the vocabulary (size V). recent: the session's recent
  // tokens (oldest first); the penalty applies to the last config.repetition_window of them.
  int32_t Sample(const std::vector<float>& logprobs, const std::vector<int32_t>& recent);

  const SamplingConfig& config() const { return config_; }

 private:
  double Uniform();  // [0, 1)
  // Makes order_[0, n') the n' >= n best candidates (n' <= limit), sorted, leaving the rest unordered.
  void SortedPrefix(size_t n, size_t limit);

  SamplingConfig config_;
  std::mt19937_64 rng_;
  std::vector<float> scratch_;
  std::vector<int32_t> order_;
  size_t sorted_ = 0;           // order_[0, sorted_) is sorted, best first
  std::vector<double> probs_;   // probabilities of order_[0, probs_.size())
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_SAMPLER_H_
