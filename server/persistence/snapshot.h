// Session snapshots: a self-describing, checksummed byte format for one session's complete state (model
// memory, unfinished block, sampler state, metadata), and the encoder/decoder for it.
//
// Contract
// - EncodeSnapshot turns a plain SessionSnapshot into bytes; DecodeSnapshot turns bytes from anywhere (the
//   server's store, or a client) back into a SessionSnapshot. The decoder treats its input as hostile: it
//   checks the magic, the declared total size, the checksum, the format version, every declared length
//   against the bytes actually present and against the limits in DecodeOptions, all BEFORE it allocates
//   anything whose size comes from the input; then the HMAC (when a key is configured), then that the
//   snapshot belongs to the expected model. Only then does it copy the payload out.
// - Error codes (absl::Status), by what the caller should do:
//     DATA_LOSS            the bytes are not an intact snapshot: bad magic, truncated, trailing bytes, a size
//                          beyond a limit, a checksum or HMAC mismatch, an internally inconsistent field.
//     FAILED_PRECONDITION  an intact snapshot this server cannot use: another model (fingerprint, tokenizer
//                          or dims differ from DecodeOptions::expected), another format version, or an
//                          unsigned snapshot while DecodeOptions::require_hmac is set.
//   Messages say what was found and what was expected.
// - Thread safety: the functions are pure (no shared state) and safe to call concurrently.
//
// Format version 2 (all integers little-endian; offsets in bytes):
//
//   Preamble, 32 bytes, the same in every format version:
//     0   8  magic "\x89BRTSNAP"
//     8   4  u32 format version (2)
//    12   4  u32 flags: bit 0 = an HMAC is present in the trailer; other bits zero
//    16   8  u64 total size of the snapshot, preamble and trailer included
//    24   4  u32 header size: bytes of the header section that follows the preamble
//    28   4  u32 tensor count
//   Header section (exactly `header size` bytes). str = u32 length + bytes; u32list = u32 count + count u32:
//     str fingerprint            model fingerprint, sha256 hex (brt_meta.json "fingerprint")
//     str tokenizer_sha256       sha256 hex of tokenizer.model
//     9 x u32 dims               n_layers, n_heads, window, head_dim, n_recurrent, n_state, d_model,
//                                vocab_size, dtype (DType code of kv/state)
//     u64 position               the session's token position (BOS is position 0)
//     str session_id, str label, i64 created_unix_ms, i64 last_used_unix_ms, str default_sampling (opaque)
//     str rng_state (opaque)
//     u32list pending_tokens     tokens of the unfinished block not yet fed to the model
//     str text_tail              text not yet tokenized (bytes, may end inside a UTF-8 character)
//     u32list recent_tokens      recent history for the repetition penalty
//   Tensor section, `tensor count` times:
//     str name, u32 dtype (DType code), u32 rank, rank x u64 dims, u64 byte count, raw bytes (host layout,
//     row-major; the writer and reader are little-endian hosts)
//   Trailer:
//     [32 bytes HMAC-SHA256(key, bytes [0, end of tensor section))]   only when flags bit 0 is set
//     32 bytes SHA-256 of every byte before it (HMAC included)
//
// Compatibility rule: a reader refuses a version it does not know (FAILED_PRECONDITION); a change to the
// layout bumps the version. The preamble and the final SHA-256 never move, so any reader can tell a
// corrupt snapshot (DATA_LOSS) from a snapshot of a newer format (FAILED_PRECONDITION).
#ifndef BRT_SERVER_PERSISTENCE_SNAPSHOT_H_
#define BRT_SERVER_PERSISTENCE_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace brt::persistence {

inline constexpr char kSnapshotMagic[8] = {'\x89', 'B', 'R', 'T', 'S', 'N', 'A', 'P'};
// Version 2: the kv tensor holds each layer's ring (the token at position p in ring slot p % C, C = W or
// 2W; a W-slot layer fills ring slots [0, W) and leaves the rest zero). Version 1 (the v1 export's
// shifted caches) is refused: its bytes would be misread.
inline constexpr uint32_t kSnapshotFormatVersion = 2;
inline constexpr size_t kSnapshotPreambleSize = 32;
inline constexpr size_t kSnapshotDigestSize = 32;  // SHA-256 and HMAC-SHA256 alike

// Names of the tensors the server core stores. DecodeSnapshot checks the shape and dtype of each one that is
// present against the snapshot's own dims (an inconsistent snapshot is DATA_LOSS).
inline constexpr std::string_view kKvTensor = "kv";        // dtype, (1, L, 2, H, 2W, dh)
inline constexpr std::string_view kStateTensor = "state";  // dtype, (1, R, 3, S, D)
inline constexpr std::string_view kNextLogprobsTensor = "next_logprobs";  // float32, (V)

// Element types; the numeric codes are part of the format and never change.
enum class DType : uint32_t {
  kFloat32 = 1,
  kBFloat16 = 2,
  kFloat16 = 3,
  kInt64 = 4,
  kInt32 = 5,
  kUint8 = 6,
};
// Bytes per element; 0 for a code that is not a DType.
size_t DTypeSize(DType dtype);
// "float32", "bfloat16", ...; "dtype(<code>)" for a code that is not a DType.
std::string DTypeName(DType dtype);

// The sizes of a model, as in the export's brt_meta.json.
struct ModelDims {
  uint32_t n_layers = 0;     // L
  uint32_t n_heads = 0;      // H
  uint32_t window = 0;       // W (block length)
  uint32_t head_dim = 0;     // dh
  uint32_t n_recurrent = 0;  // R
  uint32_t n_state = 0;      // S
  uint32_t d_model = 0;      // D
  uint32_t vocab_size = 0;   // V
  DType dtype = DType::kFloat32;  // of kv and state

  bool operator==(const ModelDims& other) const;
  bool operator!=(const ModelDims& other) const { return !(*this == other); }
  // "L=4 H=4 W=64 dh=64 R=1 S=64 D=256 V=4096 dtype=float32"
  std::string ToString() const;
};

// What makes a snapshot usable by a server: the same weights, the same tokenizer, the same sizes.
struct ModelIdentity {
  std::string fingerprint;       // brt_meta.json "fingerprint" (sha256 hex over config and weights)
  std::string tokenizer_sha256;  // brt_meta.json "tokenizer_sha256"
  ModelDims dims;
};

// One named tensor: raw bytes in row-major order.
// REQUIRES (for EncodeSnapshot): data.size() == product(shape) * DTypeSize(dtype).
struct TensorBlob {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<uint64_t> shape;
  std::string data;
};

struct SessionMetadata {
  std::string session_id;          // e.g. "s_" + 32 hex digits
  std::string label;               // client-chosen, free text
  int64_t created_unix_ms = 0;
  int64_t last_used_unix_ms = 0;
  std::string default_sampling;    // opaque to this library (the core's serialized sampling params)
};

// Everything needed to continue a session exactly where it stopped.
struct SessionSnapshot {
  ModelIdentity model;
  uint64_t position = 0;                // the session's token position (BOS at 0)
  std::vector<TensorBlob> tensors;      // kv, state, next_logprobs, ... (names unique)
  std::vector<uint32_t> pending_tokens; // tokens of the unfinished block, not yet fed to the model
  std::string text_tail;                // text not yet tokenized
  std::string rng_state;                // opaque sampler RNG state
  std::vector<uint32_t> recent_tokens;  // recent history for the repetition penalty
  SessionMetadata metadata;

  // The tensor called `name`, or nullptr.
  const TensorBlob* FindTensor(std::string_view name) const;
};

// Checks what EncodeSnapshot requires and DecodeSnapshot would check: unique tensor names, data sizes that
// match shapes, and kv/state/next_logprobs consistent with the dims. INVALID_ARGUMENT says what is wrong.
// The core should call it in debug builds or tests; EncodeSnapshot does not (it cannot fail).
absl::Status ValidateSnapshot(const SessionSnapshot& snapshot);

// Serializes `snapshot`. With a key, the snapshot carries an HMAC-SHA256 of its contents under that key.
// REQUIRES: ValidateSnapshot(snapshot).ok(); otherwise the result decodes as DATA_LOSS.
std::string EncodeSnapshot(const SessionSnapshot& snapshot,
                           const std::optional<std::string>& hmac_key = std::nullopt);

// The exact size EncodeSnapshot will produce (for memory accounting without encoding).
size_t EncodedSnapshotSize(const SessionSnapshot& snapshot, bool with_hmac);

struct DecodeOptions {
  // When set, the snapshot must be of this model: same fingerprint, tokenizer checksum and dims, else
  // FAILED_PRECONDITION.
  std::optional<ModelIdentity> expected;
  // When set, a snapshot that carries an HMAC must carry the right one (else DATA_LOSS), and, if
  // require_hmac, a snapshot without one is refused (FAILED_PRECONDITION). When unset, an HMAC present in
  // the snapshot is not verified (the checksum still is).
  std::optional<std::string> hmac_key;
  bool require_hmac = true;

  // Sanity limits on declared sizes; exceeding one is DATA_LOSS. Defaults are far above any real session.
  uint64_t max_snapshot_bytes = uint64_t{4} << 30;  // the whole input
  uint64_t max_tensor_bytes = uint64_t{2} << 30;    // one tensor
  uint32_t max_tensors = 16;
  uint32_t max_rank = 8;
  uint32_t max_string_bytes = 4096;        // fingerprint, tokenizer checksum, session id, label, tensor name
  uint32_t max_opaque_bytes = 1 << 20;     // rng_state, default_sampling
  uint32_t max_text_tail_bytes = 1 << 20;
  uint32_t max_token_list = 1 << 20;       // pending_tokens, recent_tokens (elements)
};

// Parses and verifies `bytes` (see the contract at the top of this file).
absl::StatusOr<SessionSnapshot> DecodeSnapshot(std::string_view bytes, const DecodeOptions& options);

}  // namespace brt::persistence

#endif  // BRT_SERVER_PERSISTENCE_SNAPSHOT_H_
