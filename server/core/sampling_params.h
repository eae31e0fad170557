// Sampling settings: per-field optional overrides (what a request or a session's defaults specify),
// their validation, and resolution into a complete SamplingConfig (request, then session defaults,
// then server defaults).
#ifndef BRT_SERVER_CORE_SAMPLING_PARAMS_H_
#define BRT_SERVER_CORE_SAMPLING_PARAMS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace brt {

// Limits on sampling values (documented in proto/brt/v1/brt.proto).
inline constexpr float kMaxTemperature = 5.0f;
inline constexpr float kMaxRepetitionPenalty = 10.0f;
inline constexpr uint32_t kMaxRepetitionWindow = 4096;
inline constexpr size_t kMaxStopSequences = 16;
inline constexpr size_t kMaxStopBytes = 256;

struct SamplingOverrides {
  std::optional<float> temperature;
  std::optional<uint32_t> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<uint32_t> repetition_window;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;  // empty = not set
};

// A complete sampling configuration.
struct SamplingConfig {
  float temperature = 1.0f;         // 0 = greedy
  uint32_t top_k = 0;               // 0 = off
  float top_p = 1.0f;               // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off
  uint32_t repetition_window = 64;
  uint64_t seed = 0;
  std::vector<std::string> stop;
};

// INVALID_ARGUMENT naming the field (prefixed with field_prefix, e.g. "sampling.") and its allowed
// range.
absl::Status ValidateSampling(const SamplingOverrides& s, int32_t vocab_size,
                              const std::string& field_prefix);

// request fields, else session_defaults fields, else server_defaults. An unset seed is drawn from
// std::random_device.
SamplingConfig ResolveSampling(const SamplingOverrides& request,
                               const SamplingOverrides& session_defaults,
                               const SamplingConfig& server_defaults);

}  // namespace brt

#endif  // BRT_SERVER_CORE_SAMPLING_PARAMS_H_
