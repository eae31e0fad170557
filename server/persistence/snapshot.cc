#include "server/persistence/snapshot.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/persistence/absl_compat.h"
#include "server/persistence/digest.h"

namespace brt::persistence {
namespace {

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the snapshot format stores integers and tensor data little-endian; port the byte order first"
#endif

constexpr uint32_t kFlagHmac = 1u;
constexpr uint32_t kKnownFlags = kFlagHmac;
constexpr uint32_t kMaxRankHard = 16;  // DecodeOptions::max_rank is clamped to this

// ---- writing ------------------------------------------------------------------------------------------

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void Raw(const void* data, size_t n) { out_->append(static_cast<const char*>(data), n); }
  void U32(uint32_t v) { Raw(&v, sizeof v); }
  void U64(uint64_t v) { Raw(&v, sizeof v); }
  void I64(int64_t v) { Raw(&v, sizeof v); }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Raw(s.data(), s.size());
  }
  void U32List(const std::vector<uint32_t>& v) {
    U32(static_cast<uint32_t>(v.size()));
    Raw(v.data(), v.size() * sizeof(uint32_t));
  }

 private:
  std::string* out_;
};

size_t StrSize(std::string_view s) { return 4 + s.size(); }
size_t ListSize(const std::vector<uint32_t>& v) { return 4 + 4 * v.size(); }

size_t HeaderSize(const SessionSnapshot& s) {
  return StrSize(s.model.fingerprint) + StrSize(s.model.tokenizer_sha256) + 9 * 4 + 8 +
         StrSize(s.metadata.session_id) + StrSize(s.metadata.label) + 8 + 8 +
         StrSize(s.metadata.default_sampling) + StrSize(s.rng_state) + ListSize(s.pending_tokens) +
         StrSize(s.text_tail) + ListSize(s.recent_tokens);
}

size_t TensorSectionSize(const SessionSnapshot& s) {
  size_t n = 0;
  for (const TensorBlob& t : s.tensors) n += StrSize(t.name) + 4 + 4 + 8 * t.shape.size() + 8 + t.data.size();
  return n;
}

// ---- reading ------------------------------------------------------------------------------------------

// A bounds-checked cursor over a window of the input. Every read checks the declared length against what
// is left (and against a limit) before returning a view; it never allocates.
class Reader {
 public:
  Reader(std::string_view data, size_t base_offset, const char* section)
      : data_(data), base_(base_offset), section_(section) {}

  size_t remaining() const { return data_.size() - pos_; }
  size_t offset() const { return base_ + pos_; }

  absl::Status Raw(const char* field, uint64_t n, std::string_view* out) {
    if (n > remaining()) {
      return absl::DataLossError(absl::StrCat("snapshot truncated or corrupt: ", field, " at offset ",
                                              offset(), " needs ", n, " bytes but the ", section_,
                                              " has only ", remaining(), " left"));
    }
    *out = data_.substr(pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Int(const char* field, T* out) {
    std::string_view raw;
    if (absl::Status s = Raw(field, sizeof(T), &raw); !s.ok()) return s;
    std::memcpy(out, raw.data(), sizeof(T));
    return absl::OkStatus();
  }
  absl::Status Str(const char* field, uint64_t limit, std::string_view* out) {
    uint32_t n = 0;
    if (absl::Status s = Int(field, &n); !s.ok()) return s;
    if (n > limit) {
      return absl::DataLossError(absl::StrCat("snapshot corrupt: ", field, " declares ", n,
                                              " bytes, more than the limit of ", limit));
    }
    return Raw(field, n, out);
  }
  absl::Status U32List(const char* field, uint64_t limit, std::string_view* out) {
    uint32_t n = 0;
    if (absl::Status s = Int(field, &n); !s.ok()) return s;
    if (n > limit) {
      return absl::DataLossError(absl::StrCat("snapshot corrupt: ", field, " declares ", n,
                                              " tokens, more than the limit of ", limit));
    }
    return Raw(field, uint64_t{n} * 4, out);
  }
  absl::Status ExpectEnd() const {
    if (remaining() != 0) {
      return absl::DataLossError(absl::StrCat("snapshot corrupt: ", remaining(), " unexplained bytes at the end of the ",
                                              section_, " (offset ", offset(), ")"));
    }
    return absl::OkStatus();
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  size_t base_;
  const char* section_;
};

#define BRT_RETURN_IF_ERROR(expr)            \
  do {                                       \
    if (absl::Status _st = (expr); !_st.ok()) return _st; \
  } while (0)

// Views into the input; nothing is copied until every check has passed.
struct HeaderView {
  std::string_view fingerprint, tokenizer_sha256;
  ModelDims dims;
  uint64_t position = 0;
  std::string_view session_id, label, default_sampling, rng_state, pending_tokens, text_tail, recent_tokens;
  int64_t created_unix_ms = 0, last_used_unix_ms = 0;
};

struct TensorView {
  std::string_view name;
  DType dtype = DType::kFloat32;
  uint32_t rank = 0;
  uint64_t shape[kMaxRankHard] = {};
  std::string_view data;
};

bool IsModelDType(uint32_t code) {
  return code == static_cast<uint32_t>(DType::kFloat32) || code == static_cast<uint32_t>(DType::kBFloat16) ||
         code == static_cast<uint32_t>(DType::kFloat16);
}

absl::Status ReadHeader(Reader& r, const DecodeOptions& o, HeaderView* h) {
  BRT_RETURN_IF_ERROR(r.Str("fingerprint", o.max_string_bytes, &h->fingerprint));
  BRT_RETURN_IF_ERROR(r.Str("tokenizer_sha256", o.max_string_bytes, &h->tokenizer_sha256));
  uint32_t dtype = 0;
  BRT_RETURN_IF_ERROR(r.Int("n_layers", &h->dims.n_layers));
  BRT_RETURN_IF_ERROR(r.Int("n_heads", &h->dims.n_heads));
  BRT_RETURN_IF_ERROR(r.Int("window", &h->dims.window));
  BRT_RETURN_IF_ERROR(r.Int("head_dim", &h->dims.head_dim));
  BRT_RETURN_IF_ERROR(r.Int("n_recurrent", &h->dims.n_recurrent));
  BRT_RETURN_IF_ERROR(r.Int("n_state", &h->dims.n_state));
  BRT_RETURN_IF_ERROR(r.Int("d_model", &h->dims.d_model));
  BRT_RETURN_IF_ERROR(r.Int("vocab_size", &h->dims.vocab_size));
  BRT_RETURN_IF_ERROR(r.Int("dtype", &dtype));
  if (!IsModelDType(dtype)) {
    return absl::DataLossError(absl::StrCat("snapshot corrupt: model dtype code ", dtype,
                                            " is not float32 (1), bfloat16 (2) or float16 (3)"));
  }
  h->dims.dtype = static_cast<DType>(dtype);
  BRT_RETURN_IF_ERROR(r.Int("position", &h->position));
  BRT_RETURN_IF_ERROR(r.Str("session_id", o.max_string_bytes, &h->session_id));
  BRT_RETURN_IF_ERROR(r.Str("label", o.max_string_bytes, &h->label));
  BRT_RETURN_IF_ERROR(r.Int("created_unix_ms", &h->created_unix_ms));
  BRT_RETURN_IF_ERROR(r.Int("last_used_unix_ms", &h->last_used_unix_ms));
  BRT_RETURN_IF_ERROR(r.Str("default_sampling", o.max_opaque_bytes, &h->default_sampling));
  BRT_RETURN_IF_ERROR(r.Str("rng_state", o.max_opaque_bytes, &h->rng_state));
  BRT_RETURN_IF_ERROR(r.U32List("pending_tokens", o.max_token_list, &h->pending_tokens));
  BRT_RETURN_IF_ERROR(r.Str("text_tail", o.max_text_tail_bytes, &h->text_tail));
  BRT_RETURN_IF_ERROR(r.U32List("recent_tokens", o.max_token_list, &h->recent_tokens));
  return r.ExpectEnd();
}

// Smallest possible encoding of one tensor (empty name, rank 0, no data).
constexpr uint64_t kMinTensorBytes = 4 + 4 + 4 + 8;

absl::Status ReadTensor(Reader& r, const DecodeOptions& o, uint32_t index, TensorView* t) {
  BRT_RETURN_IF_ERROR(r.Str("tensor name", o.max_string_bytes, &t->name));
  const std::string label = absl::StrCat("tensor ", index, " ('", AsAbsl(t->name), "')");
  uint32_t dtype = 0;
  BRT_RETURN_IF_ERROR(r.Int("tensor dtype", &dtype));
  const size_t elem = DTypeSize(static_cast<DType>(dtype));
  if (elem == 0) {
    return absl::DataLossError(absl::StrCat("snapshot corrupt: ", label, " has unknown dtype code ", dtype));
  }
  t->dtype = static_cast<DType>(dtype);
  BRT_RETURN_IF_ERROR(r.Int("tensor rank", &t->rank));
  const uint32_t max_rank = std::min(o.max_rank, kMaxRankHard);
  if (t->rank > max_rank) {
    return absl::DataLossError(
        absl::StrCat("snapshot corrupt: ", label, " has rank ", t->rank, ", the limit is ", max_rank));
  }
  uint64_t elements = 1;
  for (uint32_t d = 0; d < t->rank; ++d) {
    BRT_RETURN_IF_ERROR(r.Int("tensor dim", &t->shape[d]));
    if (__builtin_mul_overflow(elements, t->shape[d], &elements)) elements = UINT64_MAX;
  }
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(elements, uint64_t{elem}, &expected_bytes)) expected_bytes = UINT64_MAX;
  uint64_t nbytes = 0;
  BRT_RETURN_IF_ERROR(r.Int("tensor byte count", &nbytes));
  if (nbytes != expected_bytes) {
    return absl::DataLossError(absl::StrCat("snapshot corrupt: ", label, " declares ", nbytes,
                                            " bytes but its shape and dtype need ",
                                            expected_bytes == UINT64_MAX ? std::string("more than 2^64")
                                                                         : absl::StrCat(expected_bytes)));
  }
  if (nbytes > o.max_tensor_bytes) {
    return absl::DataLossError(absl::StrCat("snapshot corrupt: ", label, " declares ", nbytes,
                                            " bytes, more than the limit of ", o.max_tensor_bytes));
  }
  return r.Raw("tensor data", nbytes, &t->data);
}

// Shape and dtype rules for the tensors the core stores; nullopt when `name` is fine (or not a core tensor).
std::optional<std::string> SessionTensorProblem(std::string_view name, DType dtype, const uint64_t* shape,
                                                size_t rank, const ModelDims& d) {
  std::vector<uint64_t> want;
  DType want_dtype = d.dtype;
  if (name == kKvTensor) {
    want = {1, d.n_layers, 2, d.n_heads, uint64_t{2} * d.window, d.head_dim};
  } else if (name == kStateTensor) {
    want = {1, d.n_recurrent, 3, d.n_state, d.d_model};
  } else if (name == kNextLogprobsTensor) {
    want = {d.vocab_size};
    want_dtype = DType::kFloat32;
  } else {
    return std::nullopt;
  }
  if (dtype != want_dtype || rank != want.size() || !std::equal(want.begin(), want.end(), shape)) {
    return absl::StrCat("tensor '", AsAbsl(name), "' is ", DTypeName(dtype), " (",
                        absl::StrJoin(shape, shape + rank, ", "), ") but the dims ", d.ToString(),
                        " call for ", DTypeName(want_dtype), " (", absl::StrJoin(want, ", "), ")");
  }
  return std::nullopt;
}

std::string Abbrev(std::string_view hex) {
  return hex.empty() ? std::string("(empty)") : std::string(hex);
}

absl::Status CheckIdentity(const HeaderView& h, const ModelIdentity& want) {
  if (h.fingerprint != want.fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot is of another model: its fingerprint is ", Abbrev(h.fingerprint),
                     ", this server's model has ", Abbrev(want.fingerprint)));
  }
  if (h.tokenizer_sha256 != want.tokenizer_sha256) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot was made with another tokenizer: its tokenizer sha256 is ",
                     Abbrev(h.tokenizer_sha256), ", this server's tokenizer has ", Abbrev(want.tokenizer_sha256)));
  }
  if (h.dims != want.dims) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot is of a model with other dims: ",
                                                      h.dims.ToString(), "; this server's model has ",
                                                      want.dims.ToString()));
  }
  return absl::OkStatus();
}

std::vector<uint32_t> CopyTokens(std::string_view raw) {
  std::vector<uint32_t> out(raw.size() / 4);
  if (!out.empty()) std::memcpy(out.data(), raw.data(), out.size() * 4);
  return out;
}

}  // namespace

// ---- public -------------------------------------------------------------------------------------------

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kFloat16: return 2;
    case DType::kInt64: return 8;
    case DType::kInt32: return 4;
    case DType::kUint8: return 1;
  }
  return 0;
}

std::string DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat16: return "float16";
    case DType::kInt64: return "int64";
    case DType::kInt32: return "int32";
    case DType::kUint8: return "uint8";
  }
  return absl::StrCat("dtype(", static_cast<uint32_t>(dtype), ")");
}

bool ModelDims::operator==(const ModelDims& o) const {
  return n_layers == o.n_layers && n_heads == o.n_heads && window == o.window && head_dim == o.head_dim &&
         n_recurrent == o.n_recurrent && n_state == o.n_state && d_model == o.d_model &&
         vocab_size == o.vocab_size && dtype == o.dtype;
}

std::string ModelDims::ToString() const {
  return absl::StrCat("L=", n_layers, " H=", n_heads, " W=", window, " dh=", head_dim, " R=", n_recurrent,
                      " S=", n_state, " D=", d_model, " V=", vocab_size, " dtype=", DTypeName(dtype));
}

const TensorBlob* SessionSnapshot::FindTensor(std::string_view name) const {
  for (const TensorBlob& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::Status ValidateSnapshot(const SessionSnapshot& s) {
  std::set<std::string_view> names;
  for (const TensorBlob& t : s.tensors) {
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("snapshot has two tensors named '", t.name, "'"));
    }
    const size_t elem = DTypeSize(t.dtype);
    if (elem == 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' has invalid dtype ", DTypeName(t.dtype)));
    }
    if (t.shape.size() > kMaxRankHard) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' has rank ", t.shape.size(),
                                                     ", at most ", kMaxRankHard, " is supported"));
    }
    uint64_t elements = 1;
    bool overflow = false;
    for (uint64_t d : t.shape) overflow |= __builtin_mul_overflow(elements, d, &elements);
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(elements, uint64_t{elem}, &nbytes);
    if (overflow || nbytes != t.data.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' has ", t.data.size(),
                                                     " bytes of data for shape (", absl::StrJoin(t.shape, ", "),
                                                     ") of ", DTypeName(t.dtype)));
    }
    if (auto problem = SessionTensorProblem(t.name, t.dtype, t.shape.data(), t.shape.size(), s.model.dims)) {
      return absl::InvalidArgumentError(*problem);
    }
  }
  if (!IsModelDType(static_cast<uint32_t>(s.model.dims.dtype))) {
    return absl::InvalidArgumentError(
        absl::StrCat("model dtype ", DTypeName(s.model.dims.dtype), " is not float32, bfloat16 or float16"));
  }
  return absl::OkStatus();
}

size_t EncodedSnapshotSize(const SessionSnapshot& s, bool with_hmac) {
  return kSnapshotPreambleSize + HeaderSize(s) + TensorSectionSize(s) + kSnapshotDigestSize * (with_hmac ? 2 : 1);
}

std::string EncodeSnapshot(const SessionSnapshot& s, const std::optional<std::string>& hmac_key) {
  const bool with_hmac = hmac_key.has_value();
  const size_t total = EncodedSnapshotSize(s, with_hmac);
  std::string out;
  out.reserve(total);
  Writer w(&out);
  w.Raw(kSnapshotMagic, sizeof kSnapshotMagic);
  w.U32(kSnapshotFormatVersion);
  w.U32(with_hmac ? kFlagHmac : 0);
  w.U64(total);
  w.U32(static_cast<uint32_t>(HeaderSize(s)));
  w.U32(static_cast<uint32_t>(s.tensors.size()));

  w.Str(s.model.fingerprint);
  w.Str(s.model.tokenizer_sha256);
  const ModelDims& d = s.model.dims;
  for (uint32_t v : {d.n_layers, d.n_heads, d.window, d.head_dim, d.n_recurrent, d.n_state, d.d_model,
                     d.vocab_size, static_cast<uint32_t>(d.dtype)}) {
    w.U32(v);
  }
  w.U64(s.position);
  w.Str(s.metadata.session_id);
  w.Str(s.metadata.label);
  w.I64(s.metadata.created_unix_ms);
  w.I64(s.metadata.last_used_unix_ms);
  w.Str(s.metadata.default_sampling);
  w.Str(s.rng_state);
  w.U32List(s.pending_tokens);
  w.Str(s.text_tail);
  w.U32List(s.recent_tokens);

  for (const TensorBlob& t : s.tensors) {
    w.Str(t.name);
    w.U32(static_cast<uint32_t>(t.dtype));
    w.U32(static_cast<uint32_t>(t.shape.size()));
    for (uint64_t dim : t.shape) w.U64(dim);
    w.U64(t.data.size());
    w.Raw(t.data.data(), t.data.size());
  }

  if (with_hmac) {
    const Digest mac = HmacSha256(*hmac_key, out);
    w.Raw(mac.data(), mac.size());
  }
  const Digest sum = Sha256(out);
  w.Raw(sum.data(), sum.size());
  return out;
}

absl::StatusOr<SessionSnapshot> DecodeSnapshot(std::string_view bytes, const DecodeOptions& o) {
  // 1. Preamble and overall size: nothing else is trusted until the checksum matches.
  if (bytes.size() > o.max_snapshot_bytes) {
    return absl::DataLossError(absl::StrCat("snapshot is ", bytes.size(), " bytes, more than the limit of ",
                                            o.max_snapshot_bytes));
  }
  constexpr size_t kMinSize = kSnapshotPreambleSize + kSnapshotDigestSize;
  if (bytes.size() < kMinSize) {
    return absl::DataLossError(absl::StrCat("snapshot truncated: ", bytes.size(),
                                            " bytes, a snapshot has at least ", kMinSize));
  }
  if (std::memcmp(bytes.data(), kSnapshotMagic, sizeof kSnapshotMagic) != 0) {
    return absl::DataLossError("not a brt session snapshot: the magic bytes are not \\x89BRTSNAP");
  }
  Reader pre(bytes.substr(0, kSnapshotPreambleSize), 0, "preamble");
  std::string_view magic;
  uint32_t version = 0, flags = 0, header_size = 0, tensor_count = 0;
  uint64_t total_size = 0;
  BRT_RETURN_IF_ERROR(pre.Raw("magic", sizeof kSnapshotMagic, &magic));
  BRT_RETURN_IF_ERROR(pre.Int("version", &version));
  BRT_RETURN_IF_ERROR(pre.Int("flags", &flags));
  BRT_RETURN_IF_ERROR(pre.Int("total size", &total_size));
  BRT_RETURN_IF_ERROR(pre.Int("header size", &header_size));
  BRT_RETURN_IF_ERROR(pre.Int("tensor count", &tensor_count));
  if (total_size != bytes.size()) {
    return absl::DataLossError(absl::StrCat(
        total_size > bytes.size() ? "snapshot truncated" : "snapshot has trailing bytes or a corrupt size",
        ": the header declares ", total_size, " bytes, got ", bytes.size()));
  }

  // 2. Checksum over everything before the final 32 bytes (no allocation: hashes in place).
  const size_t sum_at = bytes.size() - kSnapshotDigestSize;
  const Digest sum = Sha256(bytes.substr(0, sum_at));
  if (!DigestEquals(bytes.data() + sum_at, sum)) {
    Digest stored;
    std::memcpy(stored.data(), bytes.data() + sum_at, stored.size());
    return absl::DataLossError(absl::StrCat("snapshot corrupt: SHA-256 checksum mismatch (stored ",
                                            DigestHex(stored).substr(0, 16), "..., computed ",
                                            DigestHex(sum).substr(0, 16), "...)"));
  }

  // 3. Version and flags: the bytes are intact, so a mismatch means another format, not corruption.
  if (version != kSnapshotFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot format version ", version,
                                                      " is not supported; this server reads version ",
                                                      kSnapshotFormatVersion));
  }
  if ((flags & ~kKnownFlags) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot has unknown flags 0x", absl::Hex(flags), "; this server knows 0x",
                     absl::Hex(kKnownFlags)));
  }
  const bool has_hmac = (flags & kFlagHmac) != 0;
  const size_t trailer = kSnapshotDigestSize * (has_hmac ? 2 : 1);
  if (bytes.size() < kSnapshotPreambleSize + trailer) {
    return absl::DataLossError(absl::StrCat("snapshot truncated: ", bytes.size(),
                                            " bytes cannot hold a preamble and a ", trailer, "-byte trailer"));
  }
  const size_t body_end = bytes.size() - trailer;

  // 4. HMAC, when this server has a key.
  if (o.hmac_key.has_value()) {
    if (has_hmac) {
      const Digest mac = HmacSha256(*o.hmac_key, bytes.substr(0, body_end));
      if (!DigestEquals(bytes.data() + body_end, mac)) {
        return absl::DataLossError(
            "snapshot HMAC mismatch: it was not written by a server with this server's snapshot key, or was "
            "altered");
      }
    } else if (o.require_hmac) {
      return absl::FailedPreconditionError(
          "snapshot carries no HMAC, and this server requires snapshots signed with its snapshot key");
    }
  }

  // 5. Structure: every declared length against the bytes present and the limits, still without copying.
  const size_t body_size = body_end - kSnapshotPreambleSize;
  if (header_size > body_size) {
    return absl::DataLossError(absl::StrCat("snapshot corrupt: header size ", header_size, " exceeds the ",
                                            body_size, " bytes between preamble and trailer"));
  }
  HeaderView h;
  Reader hr(bytes.substr(kSnapshotPreambleSize, header_size), kSnapshotPreambleSize, "header");
  BRT_RETURN_IF_ERROR(ReadHeader(hr, o, &h));

  const size_t tensors_at = kSnapshotPreambleSize + header_size;
  Reader tr(bytes.substr(tensors_at, body_end - tensors_at), tensors_at, "tensor section");
  if (tensor_count > o.max_tensors) {
    return absl::DataLossError(absl::StrCat("snapshot corrupt: it declares ", tensor_count,
                                            " tensors, the limit is ", o.max_tensors));
  }
  if (uint64_t{tensor_count} * kMinTensorBytes > tr.remaining()) {
    return absl::DataLossError(absl::StrCat("snapshot corrupt: ", tensor_count, " tensors cannot fit in ",
                                            tr.remaining(), " bytes"));
  }
  std::vector<TensorView> tensors(tensor_count);  // bounded by max_tensors, not by payload
  for (uint32_t i = 0; i < tensor_count; ++i) BRT_RETURN_IF_ERROR(ReadTensor(tr, o, i, &tensors[i]));
  BRT_RETURN_IF_ERROR(tr.ExpectEnd());

  // 6. Internal consistency: unique names, and the core's tensors shaped as the dims say.
  for (uint32_t i = 0; i < tensor_count; ++i) {
    for (uint32_t j = 0; j < i; ++j) {
      if (tensors[i].name == tensors[j].name) {
        return absl::DataLossError(
            absl::StrCat("snapshot corrupt: two tensors are named '", AsAbsl(tensors[i].name), "'"));
      }
    }
    const TensorView& t = tensors[i];
    if (auto problem = SessionTensorProblem(t.name, t.dtype, t.shape, t.rank, h.dims)) {
      return absl::DataLossError(absl::StrCat("snapshot corrupt: ", *problem));
    }
  }

  // 7. The right model.
  if (o.expected.has_value()) BRT_RETURN_IF_ERROR(CheckIdentity(h, *o.expected));

  // 8. Copy out.
  SessionSnapshot s;
  s.model.fingerprint = std::string(h.fingerprint);
  s.model.tokenizer_sha256 = std::string(h.tokenizer_sha256);
  s.model.dims = h.dims;
  s.position = h.position;
  s.metadata.session_id = std::string(h.session_id);
  s.metadata.label = std::string(h.label);
  s.metadata.created_unix_ms = h.created_unix_ms;
  s.metadata.last_used_unix_ms = h.last_used_unix_ms;
  s.metadata.default_sampling = std::string(h.default_sampling);
  s.rng_state = std::string(h.rng_state);
  s.pending_tokens = CopyTokens(h.pending_tokens);
  s.text_tail = std::string(h.text_tail);
  s.recent_tokens = CopyTokens(h.recent_tokens);
  s.tensors.reserve(tensor_count);
  for (const TensorView& t : tensors) {
    TensorBlob& blob = s.tensors.emplace_back();
    blob.name = std::string(t.name);
    blob.dtype = t.dtype;
    blob.shape.assign(t.shape, t.shape + t.rank);
    blob.data = std::string(t.data);
  }
  return s;
}

}  // namespace brt::persistence
