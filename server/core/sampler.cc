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
  // Candidates are taken in order of logit, most likely first (ties by id, for determinism). Only as long
  // a prefix of that order as the draw needs is sorted (SortedPrefix): sorting all V candidates for every
  // token cost ~0.2 ms, and 32 sessions' samples are drawn one after another on the executor.
  const double t = config_.temperature;
  const size_t limit =
      config_.top_k > 0 && config_.top_k < static_cast<uint32_t>(v) ? config_.top_k : static_cast<size_t>(v);
  order_.resize(v);
  std::iota(order_.begin(), order_.end(), 0);
  sorted_ = 0;
  probs_.clear();
  const double max_logit = *std::max_element(scratch_.begin(), scratch_.end()) / t;
  // Softmax with temperature over the kept candidates: their sum first (in id order when all are kept).
  double sum = 0;
  if (limit == static_cast<size_t>(v)) {
    for (float l : scratch_) sum += std::exp(static_cast<double>(l) / t - max_logit);
  } else {
    SortedPrefix(limit, limit);
    for (size_t i = 0; i < limit; ++i) sum += std::exp(static_cast<double>(scratch_[order_[i]]) / t - max_logit);
  }
  // The probability of the i-th most likely candidate (i < limit).
  auto prob = [&](size_t i) {
    if (i >= probs_.size()) {
      SortedPrefix(i + 1, limit);
      for (size_t j = probs_.size(); j < sorted_; ++j) {
        probs_.push_back(std::exp(static_cast<double>(scratch_[order_[j]]) / t - max_logit) / sum);
      }
    }
    return probs_[i];
  };
  size_t keep = limit;
  // min-p: drop tokens below min_p times the most likely one.
  if (config_.min_p > 0.0f) {
    const double floor = config_.min_p * prob(0);
    size_t k = 1;
    while (k < keep && prob(k) >= floor) ++k;
    keep = k;
  }
  // top-p: the smallest prefix whose mass reaches top_p.
  if (config_.top_p < 1.0f) {
    double cum = 0;
    size_t k = 0;
    while (k < keep) {
      cum += prob(k++);
      if (cum >= config_.top_p) break;
    }
    keep = std::max<size_t>(k, 1);
  }
  // The kept mass (1 when nothing was cut), then the draw, walking the candidates in order.
  double total = 1.0;
  if (keep < limit) {
    total = 0;
    for (size_t i = 0; i < keep; ++i) total += prob(i);
  }
  double u = Uniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    u -= prob(i);
    if (u < 0) return order_[i];
  }
  return order_[keep - 1];
}

void Sampler::SortedPrefix(size_t n, size_t limit) {
  if (n <= sorted_) return;
  // Grow geometrically: the walk asks one more at a time.
  n = std::min(limit, std::max({n, sorted_ * 4, size_t{64}}));
  auto better = [this](int32_t a, int32_t b) {
    return scratch_[a] > scratch_[b] || (scratch_[a] == scratch_[b] && a < b);
  };
  // order_[0, sorted_) is already the sorted top; select the next ones among the rest.
  auto first = order_.begin() + static_cast<std::ptrdiff_t>(sorted_);
  auto mid = order_.begin() + static_cast<std::ptrdiff_t>(n);
  if (mid < order_.end()) std::nth_element(first, mid, order_.end(), better);
  std::sort(first, mid, better);
  sorted_ = n;
}

}  // namespace brt
