#include "server/http/completion_response.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace brt {
namespace http {

std::string JsonString(std::string_view bytes) {
  return nlohmann::json(std::string(bytes)).dump(-1, ' ', false,
                                                 nlohmann::json::error_handler_t::replace);
}

namespace {
std::string Number(float x) { return nlohmann::json(static_cast<double>(x)).dump(); }
}  // namespace

std::string FinishReasonJson(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "\"length\"";
    case FinishReason::kStopSequence:
    case FinishReason::kEos:
      return "\"stop\"";
    default:
      return "null";
  }
}

void AppendLogprobsElements(const std::vector<TokenLogprob>& tokens, size_t begin, size_t end,
                            LogprobsField field, const Tokenizer& tokenizer, std::string* out) {
  for (size_t i = begin; i < end && i < tokens.size(); ++i) {
    if (i > 0) out->push_back(',');
    const TokenLogprob& t = tokens[i];
    switch (field) {
      case LogprobsField::kTokens:
        out->append(JsonString(tokenizer.PieceBytes(t.id)));
        break;
      case LogprobsField::kTokenLogprobs:
        out->append(Number(t.logprob));
        break;
      case LogprobsField::kTopLogprobs: {
        // An object {piece: logprob}; pieces that print alike keep the first (most likely) one.
        nlohmann::ordered_json top = nlohmann::ordered_json::object();
        for (const auto& [id, lp] : t.top) {
          const std::string& piece = tokenizer.PieceBytes(id);
          if (!top.contains(piece)) top[piece] = static_cast<double>(lp);
        }
        out->append(top.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
        break;
      }
      case LogprobsField::kTextOffset:
        absl::StrAppend(out, t.offset);
        break;
    }
  }
}

std::string LogprobsObject(const std::vector<TokenLogprob>& tokens, const Tokenizer& tokenizer) {
  std::string out = "{\"tokens\":[";
  AppendLogprobsElements(tokens, 0, tokens.size(), LogprobsField::kTokens, tokenizer, &out);
  out += "],\"token_logprobs\":[";
  AppendLogprobsElements(tokens, 0, tokens.size(), LogprobsField::kTokenLogprobs, tokenizer, &out);
  out += "],\"top_logprobs\":[";
  AppendLogprobsElements(tokens, 0, tokens.size(), LogprobsField::kTopLogprobs, tokenizer, &out);
  out += "],\"text_offset\":[";
  AppendLogprobsElements(tokens, 0, tokens.size(), LogprobsField::kTextOffset, tokenizer, &out);
  out += "]}";
  return out;
}

std::string CompletionHead(const std::string& id, int64_t created, const std::string& model) {
  return absl::StrCat("\"id\":", JsonString(id), ",\"object\":\"text_completion\",\"created\":",
                      created, ",\"model\":", JsonString(model));
}

std::string UsageJson(uint64_t prompt_tokens, uint64_t completion_tokens, uint64_t cached_tokens) {
  return absl::StrCat("{\"prompt_tokens\":", prompt_tokens, ",\"completion_tokens\":",
                      completion_tokens, ",\"total_tokens\":", prompt_tokens + completion_tokens,
                      ",\"prompt_tokens_details\":{\"cached_tokens\":", cached_tokens, "}}");
}

}  // namespace http
}  // namespace brt
