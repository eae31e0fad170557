// The export's metadata (brt_meta.json inside brt.pt): parsed and checked before the runner trusts it.
//
// Thread safety: a pure function.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/backend.h"

namespace brt {

inline constexpr char kMetaFile[] = "brt_meta.json";  // its name inside the export
inline constexpr int kExportFormat = 2;               // the format this server runs (slot pools)

struct ExportMetadata {
  ModelMetadata meta;         // device, dtype and state_bytes are left for the runner to fill
  std::vector<int64_t> ring;  // kv_slots: ring length C_l of each layer (W or 2W)
};

// FAILED_PRECONDITION: another export format, or a tokenizer other than tokenizer_sha256 (empty: not
// checked); INVALID_ARGUMENT: missing or inconsistent fields. Messages name model_path.
absl::StatusOr<ExportMetadata> ParseExportMetadata(const std::string& json, const std::string& model_path,
                                                   const std::string& tokenizer_sha256);

}  // namespace brt
