#include "server/core/snapshot_checks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/core/sampling_codec.h"
#include "server/core/session_id.h"
#include "server/tokenizer/tokenizer.h"

namespace brt {

namespace bp = persistence;

absl::StatusOr<SamplingOverrides> CheckSnapshotContent(const bp::SessionSnapshot& snap, int32_t vocab,
                                                       bool new_id) {
  auto bad = [](const std::string& what) {
    return absl::DataLossError(absl::StrCat("snapshot refused: ", what));
  };
  // The index of the first NaN or infinity in a float32, bfloat16 or float16 tensor (by its exponent
  // bits: all ones), or -1 when every element is finite (or the dtype is not a float type).
  auto first_non_finite = [](const bp::TensorBlob& b) -> int64_t {
    auto scan = [&](auto zero, uint64_t exponent_mask) -> int64_t {
      using Bits = decltype(zero);
      const size_t count = b.data.size() / sizeof(Bits);
      for (size_t i = 0; i < count; ++i) {
        Bits bits;
        std::memcpy(&bits, b.data.data() + i * sizeof(Bits), sizeof(Bits));
        if ((bits & exponent_mask) == exponent_mask) return static_cast<int64_t>(i);
      }
      return -1;
    };
    switch (b.dtype) {
      case bp::DType::kFloat32: return scan(uint32_t{0}, 0x7F800000u);
      case bp::DType::kBFloat16: return scan(uint16_t{0}, 0x7F80u);
      case bp::DType::kFloat16: return scan(uint16_t{0}, 0x7C00u);
      default: return -1;
    }
  };
  if (!new_id && !LooksLikeSessionId(snap.metadata.session_id)) {
    return bad(absl::StrCat("its session id '", snap.metadata.session_id.substr(0, 64),
                            "' is not a session id"));
  }
  if (!snap.pending_tokens.empty() || !snap.text_tail.empty() || !snap.rng_state.empty()) {
    return absl::FailedPreconditionError(
        "snapshot refused: it holds an unfinished block, text tail or RNG state, which this server "
        "does not write or read");
  }
  for (uint32_t t : snap.recent_tokens) {
    if (t >= static_cast<uint32_t>(vocab)) return bad(absl::StrCat("recent token ", t, " >= vocab"));
  }
  const bp::TensorBlob* kv = snap.FindTensor(bp::kKvTensor);
  const bp::TensorBlob* state = snap.FindTensor(bp::kStateTensor);
  const bp::TensorBlob* lp = snap.FindTensor(bp::kNextLogprobsTensor);
  if (kv == nullptr || state == nullptr) return bad("it has no kv or state tensor");
  if ((snap.position > 0) != (lp != nullptr)) {
    return bad("next_logprobs must be present exactly when the position is past 0");
  }
  // Client bytes are checked like a request: no session feeds 2^48 tokens (~1,800 years at 5k
  // tokens/s), so a larger position is forged.
  constexpr uint64_t kMaxPosition = uint64_t{1} << 48;
  if (snap.position > kMaxPosition) {
    return bad(absl::StrCat("position ", snap.position, " is out of range [0, 2^48]"));
  }
  auto defaults = DecodeSamplingOverrides(snap.metadata.default_sampling);
  if (!defaults.ok()) return bad(std::string(defaults.status().message()));
  absl::Status valid = ValidateSampling(*defaults, vocab, "default_sampling.");
  if (!valid.ok()) return bad(std::string(valid.message()));
  for (size_t i = 0; i < defaults->stop.size(); ++i) {
    const std::string& stop = defaults->stop[i];
    if (ValidUtf8PrefixLength(stop) != stop.size()) {
      return bad(absl::StrCat("default_sampling.stop[", i, "] is not valid UTF-8 (byte ",
                              ValidUtf8PrefixLength(stop), " of ", stop.size(),
                              "); stop sequences must be UTF-8 text"));
    }
  }
  if (snap.metadata.label.size() > 256) {
    return bad(absl::StrCat("label is ", snap.metadata.label.size(),
                            " bytes; a label is at most 256 bytes"));
  }
  if (ValidUtf8PrefixLength(snap.metadata.label) != snap.metadata.label.size()) {
    return bad(absl::StrCat("label is not valid UTF-8 (byte ",
                            ValidUtf8PrefixLength(snap.metadata.label), " of ",
                            snap.metadata.label.size(), "); a label must be UTF-8 text"));
  }
  for (const bp::TensorBlob* t : {kv, state, lp}) {
    if (t == nullptr) continue;
    const int64_t at = first_non_finite(*t);
    if (at >= 0) {
      return bad(absl::StrCat("tensor ", t->name, " holds a NaN or infinity at element ", at,
                              "; session memory and log-probabilities must be finite"));
    }
  }
  if (lp != nullptr) {
    // A log-probability distribution: every value <= 0 and logsumexp ~ 0. The tolerances leave room
    // for reduced-precision (bfloat16) models; a forged or scaled vector is far outside them.
    constexpr float kMaxLogprob = 1e-3f;
    constexpr double kMaxLogSumExp = 0.25;
    const size_t count = lp->data.size() / sizeof(float);
    double max_value = -1e300;
    std::vector<float> values(count);
    std::memcpy(values.data(), lp->data.data(), count * sizeof(float));
    for (size_t i = 0; i < count; ++i) {
      if (values[i] > kMaxLogprob) {
        return bad(absl::StrCat("next_logprobs[", i, "] = ", values[i],
                                " is a log-probability above 0"));
      }
      max_value = std::max<double>(max_value, values[i]);
    }
    double sum = 0;
    for (float v : values) sum += std::exp(static_cast<double>(v) - max_value);
    const double log_sum_exp = count > 0 ? max_value + std::log(sum) : 0.0;
    if (count > 0 && std::abs(log_sum_exp) > kMaxLogSumExp) {
      return bad(absl::StrCat("next_logprobs is not a distribution: its probabilities sum to ",
                              std::exp(log_sum_exp), ", not 1"));
    }
  }

  return *std::move(defaults);
}

}  // namespace brt
