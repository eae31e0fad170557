// /tokenize, /detokenize, /tokenizer_info (the protocol lm-evaluation-harness's remote tokenizer
// speaks) and /v1/models.
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/core/client_text.h"
#include "server/http/completion_response.h"
#include "server/http/handlers.h"
#include "server/http/http_errors.h"

namespace brt {
namespace http {
namespace {

using json = nlohmann::json;

absl::StatusOr<json> ParseObject(const std::string& body, const char* example) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body must be a JSON object such as ", example));
  }
  return j;
}

}  // namespace

void SendError(httplib::Response& res, const absl::Status& status) {
  res.status = HttpStatusOf(status.code());
  res.set_content(ErrorJson(status), "application/json");
}

void SendJson(httplib::Response& res, const std::string& body) {
  res.status = 200;
  res.set_content(body, "application/json");
}

void HandleModels(const HandlerContext& ctx, httplib::Response& res) {
  const ModelMetadata& meta = ctx.engine->metadata();
  SendJson(res, absl::StrCat("{\"object\":\"list\",\"data\":[{\"id\":", JsonString(meta.name),
                             ",\"object\":\"model\",\"created\":", ctx.started_unix_s,
                             ",\"owned_by\":\"brt-serve\",\"max_model_len\":null}]}"));
}

void HandleTokenize(const HandlerContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto j = ParseObject(req.body, "{\"prompt\": \"Hello\"}");
  if (!j.ok()) return SendError(res, j.status());
  auto it = j->find("prompt");
  if (it == j->end() || !it->is_string()) {
    return SendError(res, absl::InvalidArgumentError(
                              "prompt: required, a string (the text to tokenize)"));
  }
  const std::string text = it->get<std::string>();
  const Tokenizer& tok = ctx.engine->tokenizer();
  std::vector<int32_t> ids;
  // A control token's own text (for instance "</s>") stands for that token, as in Hugging Face
  // tokenizers; any other text is encoded. The server adds BOS itself at a session's start, so it is
  // never part of the result (add_special_tokens is accepted and has no effect).
  for (int32_t id : {tok.bos_id(), tok.eos_id(), tok.pad_id()}) {
    if (id >= 0 && text == tok.PieceString(id)) ids.push_back(id);
  }
  if (ids.empty()) {
    auto encoded = tok.Encode(text);
    if (!encoded.ok()) return SendError(res, encoded.status());
    ids = *std::move(encoded);
  }
  SendJson(res, absl::StrCat("{\"tokens\":", json(ids).dump(), ",\"count\":", ids.size(),
                             ",\"max_model_len\":null}"));
}

void HandleDetokenize(const HandlerContext& ctx, const httplib::Request& req,
                      httplib::Response& res) {
  auto j = ParseObject(req.body, "{\"tokens\": [1, 2, 3]}");
  if (!j.ok()) return SendError(res, j.status());
  auto it = j->find("tokens");
  if (it == j->end() || !it->is_array()) {
    return SendError(res, absl::InvalidArgumentError("tokens: required, a list of token ids"));
  }
  const Tokenizer& tok = ctx.engine->tokenizer();
  std::vector<int32_t> ids;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.vocab_size()) {
      return SendError(res, absl::InvalidArgumentError(absl::StrCat(
                                "tokens[", i, "] is ",
                                QuoteClientInput(t.dump(-1, ' ', false, json::error_handler_t::replace)),
                                "; token ids must be integers in [0, ", tok.vocab_size(), ")")));
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  SendJson(res, absl::StrCat("{\"prompt\":", JsonString(tok.Decode(ids)), "}"));
}

void HandleTokenizerInfo(const HandlerContext& ctx, httplib::Response& res) {
  const Tokenizer& tok = ctx.engine->tokenizer();
  json info = {
      {"tokenizer_class", "SentencePiece"},
      {"vocab_size", tok.vocab_size()},
      {"bos_token", tok.PieceString(tok.bos_id())},
      {"eos_token", tok.PieceString(tok.eos_id())},
      {"bos_token_id", tok.bos_id()},
      {"eos_token_id", tok.eos_id()},
      {"add_bos_token", true},
      {"model_max_length", nullptr},
      {"sha256", tok.sha256()},
  };
  if (tok.pad_id() >= 0) {
    info["pad_token"] = tok.PieceString(tok.pad_id());
    info["pad_token_id"] = tok.pad_id();
  }
  if (tok.unk_id() >= 0) info["unk_token"] = tok.PieceString(tok.unk_id());
  SendJson(res, info.dump(-1, ' ', false, json::error_handler_t::replace));
}

}  // namespace http
}  // namespace brt
