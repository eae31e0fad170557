// Tokenizer: a lossless SentencePiece tokenizer, loaded through the dlopen'ed libbrt_spm_shim.so so
// that SentencePiece's private protobuf never meets the process's (see spm_shim.h and the platform
// notes).
//
// Lossless contract: for any bytes x, concatenating PieceBytes(t) over Encode(x) gives x back, for
// a model trained as model/ trains it (identity normalisation, byte fallback, no dummy prefix).
// Valid UTF-8 runs are encoded by SentencePiece; every byte that is not part of valid UTF-8 becomes
// its byte-fallback token "<0xAB>".
//
// Thread safety: immutable after Create; all methods are safe to call concurrently.
#ifndef BRT_SERVER_TOKENIZER_TOKENIZER_H_
#define BRT_SERVER_TOKENIZER_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace brt {

// One token and the byte span [begin, end) of the encoded input it covers.
struct TokenSpan {
  int32_t id = 0;
  uint64_t begin = 0;
  uint64_t end = 0;
};

class Tokenizer {
 public:
  // Loads model_path through the shim library at shim_path. NOT_FOUND if either file is missing,
  // INTERNAL if the shim cannot be loaded, INVALID_ARGUMENT if the model does not parse or lacks
  // byte fallback pieces.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const std::string& model_path,
                                                           const std::string& shim_path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of text (any bytes).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;
  // Tokens with their byte spans in text, offset by base_offset.
  absl::StatusOr<std::vector<TokenSpan>> EncodeWithSpans(std::string_view text,
                                                         uint64_t base_offset = 0) const;
  // The exact bytes a token stands for: U+2581 becomes a space, "<0xAB>" the byte 0xAB, control and
  // unknown tokens nothing. Decoding is the concatenation. Empty for an out-of-range id.
  const std::string& PieceBytes(int32_t id) const;
  // The piece string as stored in the model (e.g. "▁the", "<0x0A>").
  std::string PieceString(int32_t id) const;
  std::string Decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(piece_bytes_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  // sha256 hex of the model file's bytes.
  const std::string& sha256() const { return sha256_; }

 private:
  struct Shim;
  Tokenizer() = default;
  absl::Status EncodeValidUtf8(std::string_view text, uint64_t base,
                               std::vector<TokenSpan>* out) const;

  std::unique_ptr<Shim> shim_;
  std::vector<std::string> piece_bytes_;
  std::array<int32_t, 256> byte_ids_{};
  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  std::string sha256_;
};

// Length of the longest prefix of s that is valid UTF-8 (shortest-form, no surrogates, <=
// U+10FFFF). Used to split text into valid runs and invalid bytes.
size_t ValidUtf8PrefixLength(std::string_view s);
// Length (1..4) of the valid UTF-8 sequence at the start of s, or 0 if s does not start with one.
size_t Utf8SequenceLength(std::string_view s);

}  // namespace brt

#endif  // BRT_SERVER_TOKENIZER_TOKENIZER_H_
