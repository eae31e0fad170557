#include "server/core/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_set>

namespace brt {

Sampler::Sampler(const SamplingConfig& config) : config_(config), rng_(config.seed) {}

double Sampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

namespace {

// A float's bits as an unsigned integer that orders as the float does (-0 taken as +0).
uint32_t OrderedBits(float f) {
  if (f == 0.0f) f = 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// The first index of the largest value (std::max_element's answer), with eight independent running
// maxima instead of one dependent chain: 0.5 us instead of 15 us over 4,096 logits here, paid for
// every generated token.
size_t ArgMax(const float* x, size_t n) {
  constexpr size_t kLanes = 8;
  float m[kLanes];
  for (float& lane : m) lane = -std::numeric_limits<float>::infinity();
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
  }
  for (; i < n; ++i) m[0] = x[i] > m[0] ? x[i] : m[0];
  float best = m[0];
  for (size_t j = 1; j < kLanes; ++j) best = m[j] > best ? m[j] : best;
  for (size_t k = 0; k < n; ++k) {
    if (x[k] == best) return k;
  }
  return 0;  // every value NaN or -inf: as std::max_element, the first
}

}  // namespace

template <typename Keep>
void Sampler::KeepCandidates(Keep keep) {
  size_t kept = 0;
  for (size_t j = 0; j < cands_.size(); ++j) {
    if (keep(j)) {
      cands_[kept] = cands_[j];
      weights_[kept++] = weights_[j];
    }
  }
  cands_.resize(kept);
  weights_.resize(kept);
}

int32_t Sampler::Sample(const std::vector<float>& logprobs, const std::vector<int32_t>& recent) {
  const int32_t v = static_cast<int32_t>(logprobs.size());
  if (v == 0) return 0;
  // Repetition penalty over the recent window: logits are log-probabilities (<= 0), so a penalty >
  // 1 multiplies (lowers) them; a positive logit would be divided (CTRL). Without one, the model's
  // distribution is read as it is (no copy).
  const std::vector<float>* logits = &logprobs;
  if (config_.repetition_penalty != 1.0f && config_.repetition_window > 0 && !recent.empty()) {
    scratch_.assign(logprobs.begin(), logprobs.end());
    size_t n = std::min<size_t>(recent.size(), config_.repetition_window);
    std::unordered_set<int32_t> seen(recent.end() - n, recent.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= v) continue;
      float& l = scratch_[id];
      l = l > 0 ? l / config_.repetition_penalty : l * config_.repetition_penalty;
    }
    logits = &scratch_;
  }
  const std::vector<float>& l = *logits;
  if (config_.temperature <= 0.0f) {
    // Greedy; ties go to the lowest id.
    return static_cast<int32_t>(ArgMax(l.data(), l.size()));
  }
  // The candidates: every token, or the top_k best. Each one's weight is exp(logit / T - max / T);
  // probabilities are weights over the candidates' summed weight. No candidate list is sorted: a
  // sort of the 4,096 candidates per token (or of a large top-p nucleus) cost 0.1-0.2 ms, and 32
  // sessions' tokens are drawn one after another on the executor while the model waits.
  const double t = config_.temperature;
  const float max_logit = l[ArgMax(l.data(), l.size())];
  cands_.clear();
  if (config_.top_k > 0 && config_.top_k < static_cast<uint32_t>(v)) {
    // The best top_k by (logit, then lower id), then in id order.
    keys_.resize(v);
    for (int32_t i = 0; i < v; ++i) keys_[i] = Key(l[i], i);
    std::nth_element(keys_.begin(), keys_.begin() + config_.top_k, keys_.end());
    for (uint32_t i = 0; i < config_.top_k; ++i) cands_.push_back(static_cast<int32_t>(keys_[i]));
    std::sort(cands_.begin(), cands_.end());
  } else {
    cands_.resize(v);
    for (int32_t i = 0; i < v; ++i) cands_[i] = i;
  }
  // Weights in single precision (expf here took ~4 ns a token against ~10 for exp; their relative
  // error, ~1e-7, is far below anything a draw can tell), summed in double, in id order.
  weights_.resize(cands_.size());
  const float inv_t = static_cast<float>(1.0 / t), shift = max_logit * inv_t;  // the best weighs 1
  double sum = 0;
  for (size_t j = 0; j < cands_.size(); ++j) {
    weights_[j] = std::exp(l[cands_[j]] * inv_t - shift);
    sum += weights_[j];
  }
  const size_t uncut = cands_.size();
  // min-p: drop candidates whose probability is below min_p times the most likely one's (whose weight
  // is exp(0) = 1).
  if (config_.min_p > 0.0f) {
    const double floor = config_.min_p * (1.0 / sum);
    KeepCandidates([&](size_t j) { return weights_[j] / sum >= floor; });
  }
  // top-p: the smallest set of the best candidates whose probability reaches top_p (of the top-k
  // candidates' mass), found by selection on mass (TopPCount) rather than by sorting. Only candidates
  // that can be in that set take part: every candidate better than a kept one is kept, so a kept one and
  // those below it hold at least the mass beyond top_p, and it weighs at least that mass over the number
  // of candidates (halved here, against rounding). Most of a language model's vocabulary weighs less.
  if (config_.top_p < 1.0f) {
    double mass = sum;
    if (cands_.size() != uncut) {
      mass = 0;
      for (double w : weights_) mass += w;
    }
    const double need = config_.top_p * sum;
    if (mass > need) {  // otherwise every candidate left is kept
      const double floor = 0.5 * (mass - need) / static_cast<double>(cands_.size());
      items_.clear();
      for (size_t j = 0; j < cands_.size(); ++j) {
        if (weights_[j] >= floor) items_.push_back(Item{Key(l[cands_[j]], cands_[j]), weights_[j]});
      }
      const size_t keep = TopPCount(need);
      // Keep the selected ones, still in id order.
      kept_.assign(v, 0);
      for (size_t j = 0; j < keep; ++j) kept_[static_cast<uint32_t>(items_[j].key)] = 1;
      KeepCandidates([&](size_t j) { return kept_[cands_[j]] != 0; });
    }
  }
  // The draw: a uniform share of the kept weight, walking the kept candidates in id order.
  double total = sum;  // when nothing was cut
  if (cands_.size() != uncut) {
    total = 0;
    for (double w : weights_) total += w;
  }
  double u = Uniform() * total;
  for (size_t j = 0; j < cands_.size(); ++j) {
    u -= weights_[j];
    if (u < 0) return cands_[j];
  }
  return cands_.back();
}

uint64_t Sampler::Key(float logit, int32_t id) {
  return (static_cast<uint64_t>(~OrderedBits(logit)) << 32) | static_cast<uint32_t>(id);
}

size_t Sampler::TopPCount(double need) {
  // Quickselect on mass: items_[0, lo) are taken (all better than the rest), items_[lo, hi) undecided,
  // items_[hi, end) worse than what is needed. Ends with the best `count` items in items_[0, count).
  size_t lo = 0, hi = items_.size();
  while (lo < hi) {
    // The middle of three keys as the pivot, moved to the front of the range.
    const size_t mid = lo + (hi - lo) / 2, last = hi - 1;
    size_t pick = mid;
    const uint64_t a = items_[lo].key, b = items_[mid].key, c = items_[last].key;
    if ((a < b) != (a < c)) {
      pick = lo;
    } else if ((c < a) != (c < b)) {
      pick = last;
    }
    std::swap(items_[lo], items_[pick]);
    const uint64_t pivot = items_[lo].key;
    // Better than the pivot to [lo + 1, split), the rest after (keys are unique).
    size_t split = lo + 1;
    double better = 0;
    for (size_t j = lo + 1; j < hi; ++j) {
      if (items_[j].key < pivot) {
        better += items_[j].weight;
        std::swap(items_[j], items_[split++]);
      }
    }
    // The pivot goes after the better ones.
    std::swap(items_[lo], items_[split - 1]);
    const size_t at = split - 1;
    if (better >= need) {
      hi = at;  // the better ones alone reach it
      continue;
    }
    need -= better + items_[at].weight;
    if (need <= 0) return at + 1;
    lo = at + 1;
  }
  // Every item taken and still short of top_p (or short only by rounding): keep what was taken.
  return lo;
}

}  // namespace brt
