#include "server/http/completion_request.h"

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/core/client_text.h"

namespace brt {
namespace http {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

std::string Shown(const json& v) {
  return QuoteClientInput(v.dump(-1, ' ', false, json::error_handler_t::replace));
}

absl::StatusOr<double> Number(const json& v, absl::string_view field, double lo, double hi) {
  if (!v.is_number()) {
    return Invalid(field, absl::StrCat("must be a number in [", lo, ", ", hi, "], got ", Shown(v)));
  }
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    return Invalid(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", Shown(v)));
  }
  return x;
}

absl::StatusOr<int64_t> Integer(const json& v, absl::string_view field, int64_t lo, int64_t hi) {
  if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())) {
    return Invalid(field, absl::StrCat("must be an integer in [", lo, ", ", hi, "], got ", Shown(v)));
  }
  const double x = v.get<double>();
  if (x < static_cast<double>(lo) || x > static_cast<double>(hi)) {
    return Invalid(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", Shown(v)));
  }
  return v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(x);
}

absl::StatusOr<bool> Bool(const json& v, absl::string_view field) {
  if (!v.is_boolean()) return Invalid(field, absl::StrCat("must be true or false, got ", Shown(v)));
  return v.get<bool>();
}

absl::StatusOr<std::vector<int32_t>> TokenList(const json& v, absl::string_view field) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const json& t = v[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
        t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Invalid(absl::StrCat(field, "[", i, "]"),
                     absl::StrCat("a token id must be a non-negative integer, got ", Shown(t)));
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return ids;
}

// prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...].
absl::Status ParsePrompt(const json& v, CompletionRequest* out) {
  constexpr char kShapes[] =
      "must be a string, a list of strings, a list of token ids, or a list of lists of token ids";
  if (v.is_string()) {
    out->prompts.push_back(PromptInput{v.get<std::string>(), std::nullopt});
    return absl::OkStatus();
  }
  if (!v.is_array()) return Invalid("prompt", absl::StrCat(kShapes, ", got ", Shown(v)));
  if (v.empty()) return Invalid("prompt", "must not be an empty list");
  if (v[0].is_number()) {
    auto ids = TokenList(v, "prompt");
    if (!ids.ok()) return ids.status();
    out->prompts.push_back(PromptInput{"", *std::move(ids)});
    return absl::OkStatus();
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const json& p = v[i];
    const std::string field = absl::StrCat("prompt[", i, "]");
    if (p.is_string()) {
      out->prompts.push_back(PromptInput{p.get<std::string>(), std::nullopt});
    } else if (p.is_array()) {
      auto ids = TokenList(p, field);
      if (!ids.ok()) return ids.status();
      out->prompts.push_back(PromptInput{"", *std::move(ids)});
    } else {
      return Invalid(field, absl::StrCat(kShapes, ", got ", Shown(p)));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseStop(const json& v, SamplingOverrides* s) {
  if (v.is_null()) return absl::OkStatus();
  if (v.is_string()) {
    if (!v.get<std::string>().empty()) s->stop.push_back(v.get<std::string>());
    return absl::OkStatus();
  }
  if (!v.is_array()) return Invalid("stop", absl::StrCat("must be a string or a list of strings, got ", Shown(v)));
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      return Invalid(absl::StrCat("stop[", i, "]"), absl::StrCat("must be a string, got ", Shown(v[i])));
    }
    if (!v[i].get<std::string>().empty()) s->stop.push_back(v[i].get<std::string>());
  }
  return absl::OkStatus();
}

// Fields that OpenAI defines and that would change the result if set to anything but their neutral
// value: accepted only at that value.
absl::Status CheckNeutral(const json& body) {
  if (auto it = body.find("best_of"); it != body.end() && !it->is_null() && *it != 1) {
    return Invalid("best_of", absl::StrCat("only 1 is supported, got ", Shown(*it)));
  }
  for (const char* f : {"frequency_penalty", "presence_penalty"}) {
    if (auto it = body.find(f); it != body.end() && !it->is_null() &&
                                 !(it->is_number() && it->get<double>() == 0.0)) {
      return Invalid(f, absl::StrCat("only 0 is supported (use repetition_penalty), got ", Shown(*it)));
    }
  }
  if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null() &&
                                         !(it->is_object() && it->empty())) {
    return Invalid("logit_bias", "is not supported; leave it out or send {}");
  }
  if (auto it = body.find("suffix"); it != body.end() && !it->is_null() &&
                                     !(it->is_string() && it->get<std::string>().empty())) {
    return Invalid("suffix", "is not supported (the model only continues text); leave it out");
  }
  if (auto it = body.find("n"); it != body.end() && !it->is_null() && *it != 1) {
    return Invalid("n", absl::StrCat("only 1 is supported (send the prompt again for more), got ",
                                     Shown(*it)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(const std::string& body,
                                                         const CompletionLimits& limits) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(
        "the request body is not valid JSON; send a JSON object such as {\"prompt\": \"Hello\"}");
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body must be a JSON object, got ", Shown(j)));
  }
  CompletionRequest req;
  absl::Status st = CheckNeutral(j);
  if (!st.ok()) return st;
  if (auto it = j.find("model"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return Invalid("model", absl::StrCat("must be a string, got ", Shown(*it)));
    req.model = it->get<std::string>();
  }
  auto prompt = j.find("prompt");
  if (prompt == j.end() || prompt->is_null()) {
    return Invalid("prompt", "is required (a string, or token ids; \"\" continues a session)");
  }
  st = ParsePrompt(*prompt, &req);
  if (!st.ok()) return st;
  if (req.prompts.size() > limits.max_prompts) {
    return Invalid("prompt", absl::StrCat("has ", req.prompts.size(), " prompts; at most ",
                                          limits.max_prompts, " per request (--http_max_prompts)"));
  }
  if (auto it = j.find("max_tokens"); it != j.end() && !it->is_null()) {
    auto v = Integer(*it, "max_tokens", 0, limits.max_tokens_cap);
    if (!v.ok()) return v.status();
    req.max_tokens = static_cast<uint32_t>(*v);
  }
  if (auto it = j.find("temperature"); it != j.end() && !it->is_null()) {
    auto v = Number(*it, "temperature", 0, kMaxTemperature);
    if (!v.ok()) return v.status();
    req.sampling.temperature = static_cast<float>(*v);
  }
  if (auto it = j.find("top_p"); it != j.end() && !it->is_null()) {
    auto v = Number(*it, "top_p", 0, 1);
    if (!v.ok()) return v.status();
    if (*v <= 0) return Invalid("top_p", "must be in (0, 1], got 0");
    req.sampling.top_p = static_cast<float>(*v);
  }
  if (auto it = j.find("top_k"); it != j.end() && !it->is_null()) {
    // vLLM's convention: -1 (or 0) = off.
    auto v = Integer(*it, "top_k", -1, std::numeric_limits<int32_t>::max());
    if (!v.ok()) return v.status();
    req.sampling.top_k = static_cast<uint32_t>(*v < 0 ? 0 : *v);
  }
  if (auto it = j.find("min_p"); it != j.end() && !it->is_null()) {
    auto v = Number(*it, "min_p", 0, 1);
    if (!v.ok()) return v.status();
    req.sampling.min_p = static_cast<float>(*v);
  }
  if (auto it = j.find("repetition_penalty"); it != j.end() && !it->is_null()) {
    auto v = Number(*it, "repetition_penalty", 0, kMaxRepetitionPenalty);
    if (!v.ok()) return v.status();
    req.sampling.repetition_penalty = static_cast<float>(*v);
  }
  if (auto it = j.find("seed"); it != j.end() && !it->is_null()) {
    auto v = Integer(*it, "seed", std::numeric_limits<int64_t>::min(),
                     std::numeric_limits<int64_t>::max());
    if (!v.ok()) return v.status();
    req.sampling.seed = static_cast<uint64_t>(*v);
  }
  if (auto it = j.find("stop"); it != j.end()) {
    st = ParseStop(*it, &req.sampling);
    if (!st.ok()) return st;
  }
  if (auto it = j.find("stream"); it != j.end() && !it->is_null()) {
    auto v = Bool(*it, "stream");
    if (!v.ok()) return v.status();
    req.stream = *v;
  }
  if (auto it = j.find("stream_options"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) {
      return Invalid("stream_options", absl::StrCat("must be an object, got ", Shown(*it)));
    }
    if (auto u = it->find("include_usage"); u != it->end() && !u->is_null()) {
      auto v = Bool(*u, "stream_options.include_usage");
      if (!v.ok()) return v.status();
      req.include_usage = *v;
    }
  }
  if (auto it = j.find("logprobs"); it != j.end() && !it->is_null()) {
    auto v = Integer(*it, "logprobs", 0, limits.max_logprobs);
    if (!v.ok()) return v.status();
    req.logprobs = static_cast<uint32_t>(*v);
  }
  if (auto it = j.find("echo"); it != j.end() && !it->is_null()) {
    auto v = Bool(*it, "echo");
    if (!v.ok()) return v.status();
    req.echo = *v;
  }
  if (auto it = j.find("session_id"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) {
      return Invalid("session_id", absl::StrCat("must be a string (a brt session id), got ", Shown(*it)));
    }
    req.session_id = it->get<std::string>();
  }
  if (auto it = j.find("fork"); it != j.end() && !it->is_null()) {
    auto v = Bool(*it, "fork");
    if (!v.ok()) return v.status();
    req.fork = *v;
  }
  if (auto it = j.find("position"); it != j.end() && !it->is_null()) {
    auto v = Integer(*it, "position", 1, std::numeric_limits<int64_t>::max());
    if (!v.ok()) return v.status();
    req.position = static_cast<uint64_t>(*v);
    if (req.session_id.empty()) return Invalid("position", "needs session_id (the session to rewind)");
  }
  if (auto it = j.find("stream_interval"); it != j.end() && !it->is_null()) {
    auto v = Integer(*it, "stream_interval", 1, std::numeric_limits<uint32_t>::max());
    if (!v.ok()) return v.status();
    req.stream_interval = static_cast<uint32_t>(*v);
  }
  if (req.fork && req.session_id.empty()) {
    return Invalid("fork", "needs session_id (the session to copy)");
  }
  if (!req.session_id.empty() && req.prompts.size() != 1) {
    return Invalid("session_id", absl::StrCat("takes exactly one prompt, got ", req.prompts.size()));
  }
  absl::Status sampling = ValidateSampling(req.sampling, std::numeric_limits<int32_t>::max(), "");
  if (!sampling.ok()) return sampling;
  return req;
}

}  // namespace http
}  // namespace brt
