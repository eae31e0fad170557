#include "server/model/export_metadata.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace brt {

absl::StatusOr<ExportMetadata> ParseExportMetadata(const std::string& json, const std::string& model_path,
                                                   const std::string& tokenizer_sha256) {
  ExportMetadata out;
  ModelMetadata& meta = out.meta;
  try {
    auto j = nlohmann::json::parse(json);
    const int format = j.value("format", 0);
    if (format != kExportFormat) {
      return absl::FailedPreconditionError(absl::StrCat(
          model_path, ": export format ", format, " is not supported; this server needs format ",
          kExportFormat, " (slot pools). Re-export the model with model/brt/export.py"));
    }
    out.ring = j.at("kv_slots").get<std::vector<int64_t>>();
    meta.name = j.value("name", "brt");
    meta.fingerprint = j.value("fingerprint", "");
    meta.tokenizer_sha256 = j.value("tokenizer_sha256", "");
    meta.window = j.at("window").get<int32_t>();
    meta.n_state = j.at("n_state").get<int32_t>();
    meta.n_layers = j.at("n_layers").get<int32_t>();
    meta.n_recurrent = j.at("n_recurrent").get<int32_t>();
    meta.n_heads = j.at("n_heads").get<int32_t>();
    meta.head_dim = j.at("head_dim").get<int32_t>();
    meta.d_model = j.at("d_model").get<int32_t>();
    meta.vocab_size = j.at("vocab_size").get<int32_t>();
    meta.bos_id = j.at("bos_id").get<int32_t>();
    meta.eos_id = j.at("eos_id").get<int32_t>();
    meta.parameters = j.value("parameters", int64_t{0});
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": bad or missing ", kMetaFile, ": ", e.what()));
  }
  if (static_cast<int32_t>(out.ring.size()) != meta.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": kv_slots has ",
                                                   out.ring.size(), " entries for ", meta.n_layers,
                                                   " layers"));
  }
  for (int64_t c : out.ring) {
    if (c != meta.window && c != 2 * meta.window) {
      return absl::InvalidArgumentError(
          absl::StrCat(model_path, ": kv_slots entries must be W or 2W, got ", c));
    }
  }
  if (meta.window <= 0 || meta.vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": window and vocab_size must be > 0"));
  }
  if (!tokenizer_sha256.empty() && meta.tokenizer_sha256 != tokenizer_sha256) {
    return absl::FailedPreconditionError(
        absl::StrCat("tokenizer mismatch: the export ", model_path,
                     " was made with a tokenizer of sha256 ", meta.tokenizer_sha256,
                     " but the loaded tokenizer has sha256 ", tokenizer_sha256));
  }
  return out;
}

}  // namespace brt
