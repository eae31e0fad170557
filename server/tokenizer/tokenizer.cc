#include "server/tokenizer/tokenizer.h"

#include <dlfcn.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/sha256.h"
#include "server/tokenizer/sanitizer_build.h"
#include "server/tokenizer/spm_shim.h"

namespace brt {
namespace {

// The sanitizer runtimes refuse RTLD_DEEPBIND (they abort in dlopen: google/sanitizers#611). Sanitizer builds
// (tests/checks/run.sh) link neither gRPC nor LibTorch, so no second libprotobuf is there to keep apart.
constexpr int kShimDeepBind = kAddressSanitizerBuild ? 0 : RTLD_DEEPBIND;

}  // namespace

// Function pointers into the dlopen'ed shim. The library is intentionally never dlclose'd:
// unloading SentencePiece (and its private protobuf) at exit buys nothing and risks
// static-destructor order issues.
struct Tokenizer::Shim {
  void* library = nullptr;
  brt_spm* spm = nullptr;
  decltype(&brt_spm_load) load = nullptr;
  decltype(&brt_spm_free) free = nullptr;
  decltype(&brt_spm_vocab_size) vocab_size = nullptr;
  decltype(&brt_spm_special_id) special_id = nullptr;
  decltype(&brt_spm_encode) encode = nullptr;
  decltype(&brt_spm_id_to_piece) id_to_piece = nullptr;
  decltype(&brt_spm_piece_type) piece_type = nullptr;
  decltype(&brt_spm_piece_to_id) piece_to_id = nullptr;
};

namespace {

template <typename F>
absl::Status Bind(void* library, const char* name, F* out) {
  void* sym = dlsym(library, name);
  if (sym == nullptr) {
    return absl::InternalError(absl::StrCat("tokenizer shim lacks symbol ", name));
  }
  *out = reinterpret_cast<F>(sym);
  return absl::OkStatus();
}

bool FileExists(const std::string& path) { return std::ifstream(path).good(); }

// "<0xAB>" -> 0xAB, or -1.
int ParseBytePiece(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    char c = piece[i];
    int digit = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                         : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

}  // namespace

size_t Utf8SequenceLength(std::string_view s) {
  if (s.empty()) return 0;
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  if (b(1) < lo || b(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (b(i) < 0x80 || b(i) > 0xBF) return 0;
  }
  return n;
}

size_t ValidUtf8PrefixLength(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t n = Utf8SequenceLength(s.substr(i));
    if (n == 0) break;
    i += n;
  }
  return i;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const std::string& model_path,
                                                             const std::string& shim_path) {
  if (!FileExists(model_path)) {
    return absl::NotFoundError(absl::StrCat("tokenizer model not found: ", model_path));
  }
  if (!FileExists(shim_path)) {
    return absl::NotFoundError(
        absl::StrCat("tokenizer shim library not found: ", shim_path, " (set --tokenizer_shim)"));
  }
  auto shim = std::make_unique<Shim>();
  shim->library = dlopen(shim_path.c_str(), RTLD_NOW | RTLD_LOCAL | kShimDeepBind);
  if (shim->library == nullptr) {
    return absl::InternalError(absl::StrCat("dlopen(", shim_path, ") failed: ", dlerror()));
  }
  for (absl::Status s : {Bind(shim->library, "brt_spm_load", &shim->load),
                         Bind(shim->library, "brt_spm_free", &shim->free),
                         Bind(shim->library, "brt_spm_vocab_size", &shim->vocab_size),
                         Bind(shim->library, "brt_spm_special_id", &shim->special_id),
                         Bind(shim->library, "brt_spm_encode", &shim->encode),
                         Bind(shim->library, "brt_spm_id_to_piece", &shim->id_to_piece),
                         Bind(shim->library, "brt_spm_piece_type", &shim->piece_type),
                         Bind(shim->library, "brt_spm_piece_to_id", &shim->piece_to_id)}) {
    if (!s.ok()) return s;
  }
  char err[512] = {0};
  shim->spm = shim->load(model_path.c_str(), err, sizeof(err));
  if (shim->spm == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load tokenizer model ", model_path, ": ", err));
  }

  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->shim_ = std::move(shim);
  Shim& sh = *tok->shim_;
  int32_t vocab = sh.vocab_size(sh.spm);
  if (vocab <= 0) return absl::InvalidArgumentError("tokenizer model has an empty vocabulary");
  tok->bos_id_ = sh.special_id(sh.spm, 0);
  tok->eos_id_ = sh.special_id(sh.spm, 1);
  tok->pad_id_ = sh.special_id(sh.spm, 2);
  tok->unk_id_ = sh.special_id(sh.spm, 3);
  tok->byte_ids_.fill(-1);
  tok->piece_bytes_.resize(vocab);
  for (int32_t id = 0; id < vocab; ++id) {
    std::string piece = tok->PieceString(id);
    int32_t type = sh.piece_type(sh.spm, id);
    std::string& bytes = tok->piece_bytes_[id];
    if (type & BRT_SPM_BYTE) {
      int value = ParseBytePiece(piece);
      if (value >= 0) {
        bytes.assign(1, static_cast<char>(value));
        tok->byte_ids_[value] = id;
      }
    } else if (type & (BRT_SPM_CONTROL | BRT_SPM_UNKNOWN | BRT_SPM_UNUSED)) {
      // Stands for no text.
    } else {
      static const std::string kSpace = "\xE2\x96\x81";  // U+2581
      for (size_t i = 0; i < piece.size();) {
        if (piece.compare(i, kSpace.size(), kSpace) == 0) {
          bytes.push_back(' ');
          i += kSpace.size();
        } else {
          bytes.push_back(piece[i++]);
        }
      }
    }
  }
  for (int b = 0; b < 256; ++b) {
    if (tok->byte_ids_[b] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer model ", model_path,
                       " lacks byte-fallback pieces (train with --byte_fallback=true)"));
    }
  }
  auto sha = Sha256HexOfFile(model_path);
  if (!sha.ok()) return sha.status();
  tok->sha256_ = *std::move(sha);
  return tok;
}

Tokenizer::~Tokenizer() {
  if (shim_ && shim_->spm != nullptr) shim_->free(shim_->spm);
}

std::string Tokenizer::PieceString(int32_t id) const {
  std::string buf(64, '\0');
  int64_t n = shim_->id_to_piece(shim_->spm, id, buf.data(), buf.size());
  if (n < 0) return "";
  if (static_cast<size_t>(n) > buf.size()) {
    buf.resize(n);
    n = shim_->id_to_piece(shim_->spm, id, buf.data(), buf.size());
  }
  buf.resize(n);
  return buf;
}

const std::string& Tokenizer::PieceBytes(int32_t id) const {
  static const std::string kEmpty;
  if (id < 0 || id >= vocab_size()) return kEmpty;
  return piece_bytes_[id];
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += PieceBytes(id);
  return out;
}

absl::Status Tokenizer::EncodeValidUtf8(std::string_view text, uint64_t base,
                                        std::vector<TokenSpan>* out) const {
  if (text.empty()) return absl::OkStatus();
  size_t cap = text.size() + 16;
  std::vector<int32_t> ids(cap);
  std::vector<uint32_t> begins(cap), ends(cap);
  char err[512] = {0};
  int64_t n = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    n = shim_->encode(shim_->spm, text.data(), text.size(), ids.data(), begins.data(), ends.data(),
                      cap, err, sizeof(err));
    if (n < 0) return absl::InternalError(absl::StrCat("SentencePiece encode failed: ", err));
    if (static_cast<size_t>(n) <= cap) break;
    cap = static_cast<size_t>(n);
    ids.resize(cap);
    begins.resize(cap);
    ends.resize(cap);
  }
  // Spans: from the pieces' own bytes when they reproduce the text exactly (the lossless case),
  // otherwise from SentencePiece's surface offsets.
  bool lossless = true;
  size_t pos = 0;
  for (int64_t i = 0; i < n && lossless; ++i) {
    const std::string& bytes = PieceBytes(ids[i]);
    lossless = text.compare(pos, bytes.size(), bytes) == 0;
    pos += bytes.size();
  }
  lossless = lossless && pos == text.size();
  pos = 0;
  for (int64_t i = 0; i < n; ++i) {
    TokenSpan t;
    t.id = ids[i];
    if (lossless) {
      t.begin = base + pos;
      pos += PieceBytes(ids[i]).size();
      t.end = base + pos;
    } else {
      t.begin = base + begins[i];
      t.end = base + ends[i];
    }
    out->push_back(t);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TokenSpan>> Tokenizer::EncodeWithSpans(std::string_view text,
                                                                  uint64_t base_offset) const {
  std::vector<TokenSpan> out;
  out.reserve(text.size() / 3 + 4);
  // SentencePiece reads a literal U+2581 as its own space marker, which would decode as a space. To stay
  // lossless it is encoded as its three byte pieces instead (model/brt/tokenizer.py does the same).
  static constexpr std::string_view kMarker = "\xE2\x96\x81";
  // One pass: each byte is looked at once (a UTF-8 sequence is validated as the run grows, and a
  // marker ends the run it is found in), so the cost is linear in the text whatever its mix of
  // markers, invalid bytes and valid runs.
  auto emit_byte = [&](size_t at) {
    unsigned char byte = static_cast<unsigned char>(text[at]);
    out.push_back(TokenSpan{byte_ids_[byte], base_offset + at, base_offset + at + 1});
  };
  size_t i = 0;
  while (i < text.size()) {
    // The longest valid UTF-8 run at i that holds no marker.
    size_t end = i;
    while (end < text.size()) {
      size_t n = Utf8SequenceLength(text.substr(end, 4));
      if (n == 0 || (n == kMarker.size() && text.compare(end, n, kMarker) == 0)) break;
      end += n;
    }
    if (end > i) {
      absl::Status s = EncodeValidUtf8(text.substr(i, end - i), base_offset + i, &out);
      if (!s.ok()) return s;
      i = end;
    } else if (text.compare(i, kMarker.size(), kMarker) == 0) {
      for (size_t k = 0; k < kMarker.size(); ++k) emit_byte(i++);
    } else {  // a byte that does not start a valid UTF-8 sequence
      emit_byte(i++);
    }
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text) const {
  auto spans = EncodeWithSpans(text);
  if (!spans.ok()) return spans.status();
  std::vector<int32_t> ids;
  ids.reserve(spans->size());
  for (const TokenSpan& t : *spans) ids.push_back(t.id);
  return ids;
}

}  // namespace brt
