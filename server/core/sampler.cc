#include "server/core/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

namespace brt {

Sampler::Sampler(const SamplingConfig& config) : config_(config), rng_(config.seed) {}

double Sampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::Sample(const std::vector<float>& logprobs, const std::vector<int32_t>& recent) {
  const int32_t v = static_cast<int32_t>(logprobs.size());
  if (v == 0) return 0;
  scratch_.assign(logprobs.begin(), logprobs.end());
  // Repetition penalty over the recent window: logits are log-probabilities (<= 0), so a penalty >
  // 1 multiplies (lowers) them; a positive logit would be divided (CTRL).
  if (config_.repetition_penalty != 1.0f && config_.repetition_window > 0 && !recent.empty()) {
    size_t n = std::min<size_t>(recent.size(), config_.repetition_window);
    std::unordered_set<int32_t> seen(recent.end() - n, recent.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= v) continue;
      float& l = scratch_[id];
      l = l > 0 ? l / config_.repetition_penalty : l * config_.repetition_penalty;
    }
  }
  if (config_.temperature <= 0.0f) {
    // Greedy; ties go to the lowest id.
    return static_cast<int32_t>(std::max_element(scratch_.begin(), scratch_.end()) -
                                scratch_.begin());
  }
  // Candidates sorted by logit, most likely first (ties by id, for determinism).
  order_.resize(v);
  std::iota(order_.begin(), order_.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return scratch_[a] > scratch_[b] || (scratch_[a] == scratch_[b] && a < b);
  };
  size_t keep = v;
  if (config_.top_k > 0 && config_.top_k < static_cast<uint32_t>(v)) {
    keep = config_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), better);
  } else {
    std::sort(order_.begin(), order_.end(), better);
  }
  // Softmax with temperature over the kept candidates.
  std::vector<double> probs(keep);
  const double max_logit = scratch_[order_[0]] / config_.temperature;
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>(scratch_[order_[i]]) / config_.temperature - max_logit);
    sum += probs[i];
  }
  for (double& p : probs) p /= sum;
  // min-p: drop tokens below min_p times the most likely one.
  if (config_.min_p > 0.0f) {
    const double floor = config_.min_p * probs[0];
    size_t k = 1;
    while (k < keep && probs[k] >= floor) ++k;
    keep = k;
  }
  // top-p: the smallest prefix whose mass reaches top_p.
  if (config_.top_p < 1.0f) {
    double cum = 0;
    size_t k = 0;
    while (k < keep) {
      cum += probs[k++];
      if (cum >= config_.top_p) break;
    }
    keep = std::max<size_t>(k, 1);
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += probs[i];
  double u = Uniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    u -= probs[i];
    if (u < 0) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace brt
