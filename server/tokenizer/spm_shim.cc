// SentencePiece behind a C interface. The only file that includes sentencepiece_processor.h (its
// absl::string_view stand-in clashes with real Abseil headers).
#include "server/tokenizer/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <exception>
#include <memory>
#include <string>

#define BRT_SPM_EXPORT __attribute__((visibility("default")))

struct brt_spm {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

void WriteError(const std::string& message, char* err, size_t err_cap) {
  if (err == nullptr || err_cap == 0) return;
  size_t n = message.size() < err_cap - 1 ? message.size() : err_cap - 1;
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

}  // namespace

extern "C" {

BRT_SPM_EXPORT brt_spm* brt_spm_load(const char* path, char* err, size_t err_cap) {
  try {
    auto spm = std::make_unique<brt_spm>();
    auto status = spm->processor.Load(path);
    if (!status.ok()) {
      WriteError(status.ToString(), err, err_cap);
      return nullptr;
    }
    return spm.release();
  } catch (const std::exception& e) {
    WriteError(e.what(), err, err_cap);
  } catch (...) {
    WriteError("unknown exception in SentencePiece", err, err_cap);
  }
  return nullptr;
}

BRT_SPM_EXPORT void brt_spm_free(brt_spm* spm) { delete spm; }

BRT_SPM_EXPORT int32_t brt_spm_vocab_size(const brt_spm* spm) {
  try {
    return spm->processor.GetPieceSize();
  } catch (...) {
    return -1;
  }
}

BRT_SPM_EXPORT int32_t brt_spm_special_id(const brt_spm* spm, int which) {
  try {
    switch (which) {
      case 0:
        return spm->processor.bos_id();
      case 1:
        return spm->processor.eos_id();
      case 2:
        return spm->processor.pad_id();
      case 3:
        return spm->processor.unk_id();
      default:
        return -1;
    }
  } catch (...) {
    return -1;
  }
}

BRT_SPM_EXPORT int64_t brt_spm_encode(const brt_spm* spm, const char* text, size_t len,
                                      int32_t* ids, uint32_t* begins, uint32_t* ends, size_t cap,
                                      char* err, size_t err_cap) {
  try {
    sentencepiece::ImmutableSentencePieceText spt =
        spm->processor.EncodeAsImmutableProto(std::string(text, len));
    size_t n = spt.pieces_size();
    if (n <= cap) {
      for (size_t i = 0; i < n; ++i) {
        auto piece = spt.pieces(static_cast<int>(i));
        ids[i] = static_cast<int32_t>(piece.id());
        begins[i] = piece.begin();
        ends[i] = piece.end();
      }
    }
    return static_cast<int64_t>(n);
  } catch (const std::exception& e) {
    WriteError(e.what(), err, err_cap);
  } catch (...) {
    WriteError("unknown exception in SentencePiece", err, err_cap);
  }
  return -1;
}

BRT_SPM_EXPORT int64_t brt_spm_id_to_piece(const brt_spm* spm, int32_t id, char* buf, size_t cap) {
  try {
    if (id < 0 || id >= spm->processor.GetPieceSize()) return -1;
    const std::string& piece = spm->processor.IdToPiece(id);
    std::memcpy(buf, piece.data(), piece.size() < cap ? piece.size() : cap);
    return static_cast<int64_t>(piece.size());
  } catch (...) {
    return -1;
  }
}

BRT_SPM_EXPORT int32_t brt_spm_piece_type(const brt_spm* spm, int32_t id) {
  try {
    int32_t type = BRT_SPM_NORMAL;
    if (spm->processor.IsControl(id)) type |= BRT_SPM_CONTROL;
    if (spm->processor.IsUnknown(id)) type |= BRT_SPM_UNKNOWN;
    if (spm->processor.IsUnused(id)) type |= BRT_SPM_UNUSED;
    if (spm->processor.IsByte(id)) type |= BRT_SPM_BYTE;
    return type;
  } catch (...) {
    return BRT_SPM_UNKNOWN;
  }
}

BRT_SPM_EXPORT int32_t brt_spm_piece_to_id(const brt_spm* spm, const char* piece, size_t len) {
  try {
    std::string p(piece, len);
    int32_t id = spm->processor.PieceToId(p);
    if (id == spm->processor.unk_id() && spm->processor.IdToPiece(id) != p) return -1;
    return id;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
