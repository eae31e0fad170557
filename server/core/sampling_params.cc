#include "server/core/sampling_params.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace brt {

absl::Status ValidateSampling(const SamplingOverrides& s, int32_t vocab_size,
                              const std::string& p) {
  auto bad = [&](const char* field, const std::string& range, auto value) {
    return absl::InvalidArgumentError(absl::StrCat(p, field, " must be ", range, ", got ", value));
  };
  if (s.temperature && !(*s.temperature >= 0.0f && *s.temperature <= kMaxTemperature)) {
    return bad("temperature", absl::StrCat("in [0, ", kMaxTemperature, "] (0 = greedy)"),
               *s.temperature);
  }
  if (s.top_k && *s.top_k > static_cast<uint32_t>(vocab_size)) {
    return bad("top_k", absl::StrCat("in [0, ", vocab_size, "] (0 = off)"), *s.top_k);
  }
  if (s.top_p && !(*s.top_p > 0.0f && *s.top_p <= 1.0f)) {
    return bad("top_p", "in (0, 1] (1 = off)", *s.top_p);
  }
  if (s.min_p && !(*s.min_p >= 0.0f && *s.min_p < 1.0f)) {
    return bad("min_p", "in [0, 1) (0 = off)", *s.min_p);
  }
  if (s.repetition_penalty &&
      !(*s.repetition_penalty > 0.0f && *s.repetition_penalty <= kMaxRepetitionPenalty)) {
    return bad("repetition_penalty", absl::StrCat("in (0, ", kMaxRepetitionPenalty, "] (1 = off)"),
               *s.repetition_penalty);
  }
  if (s.repetition_window && *s.repetition_window > kMaxRepetitionWindow) {
    return bad("repetition_window", absl::StrCat("in [0, ", kMaxRepetitionWindow, "]"),
               *s.repetition_window);
  }
  if (s.stop.size() > kMaxStopSequences) {
    return bad("stop", absl::StrCat("at most ", kMaxStopSequences, " sequences"), s.stop.size());
  }
  for (const std::string& stop : s.stop) {
    if (stop.empty() || stop.size() > kMaxStopBytes) {
      return bad("stop", absl::StrCat("sequences of 1..", kMaxStopBytes, " bytes"),
                 absl::StrCat(stop.size(), " bytes"));
    }
  }
  return absl::OkStatus();
}

SamplingConfig ResolveSampling(const SamplingOverrides& r, const SamplingOverrides& d,
                               const SamplingConfig& server) {
  SamplingConfig c = server;
  auto pick = [](const auto& req, const auto& def, auto& out) {
    if (req) {
      out = *req;
    } else if (def) {
      out = *def;
    }
  };
  pick(r.temperature, d.temperature, c.temperature);
  pick(r.top_k, d.top_k, c.top_k);
  pick(r.top_p, d.top_p, c.top_p);
  pick(r.min_p, d.min_p, c.min_p);
  pick(r.repetition_penalty, d.repetition_penalty, c.repetition_penalty);
  pick(r.repetition_window, d.repetition_window, c.repetition_window);
  if (r.seed) {
    c.seed = *r.seed;
  } else if (d.seed) {
    c.seed = *d.seed;
  } else {
    std::random_device rd;
    c.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  if (!r.stop.empty()) {
    c.stop = r.stop;
  } else if (!d.stop.empty()) {
    c.stop = d.stop;
  }
  return c;
}

}  // namespace brt
