// Sampler: picks the next token from a distribution of log-probabilities with temperature (0 =
// greedy), top-k, top-p, min-p and a CTRL-style repetition penalty, using its own seeded generator
// (std::mt19937_64 with a portable uniform conversion), so the same seed and inputs give the same
// tokens on every run. The cuts select their candidates without sorting them (selection by logit for
// top-k, by probability mass for top-p), and the draw walks the kept candidates in id order.
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
  struct Item {
    uint64_t key;   // Key(): ascending keys are the most likely first
    double weight;  // exp(logit / T - max / T)
  };

  double Uniform();  // [0, 1)
  // Orders candidates by logit, best first, ties by lower id: (~order bits of the logit) << 32 | id.
  static uint64_t Key(float logit, int32_t id);
  // Rearranges items_ so that its first n items are the fewest best whose weights sum to `need` (all
  // of them if they never do), and returns n. Expected linear time.
  size_t TopPCount(double need);
  // Drops the candidates j (indices into cands_/weights_) for which keep(j) is false, keeping the order.
  template <typename Keep>
  void KeepCandidates(Keep keep);

  SamplingConfig config_;
  std::mt19937_64 rng_;
  // Scratch, kept between calls so a draw allocates nothing.
  std::vector<float> scratch_;     // the logits after the repetition penalty
  std::vector<uint64_t> keys_;     // top-k selection
  std::vector<int32_t> cands_;     // the candidates still kept, in id order
  std::vector<double> weights_;    // their weights
  std::vector<Item> items_;        // top-p selection
  std::vector<uint8_t> kept_;      // per id: selected by top-p
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_SAMPLER_H_
