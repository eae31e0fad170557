// ModelBackend: the torch-free interface the core uses to run a BRT export (see model/README.md,
// "Export contract"). ModelRunner (model_runner.h) implements it with LibTorch; tests may use a
// fake.
//
// Per-session model memory (the key/value cache and the recurrent state) is an opaque, immutable
// DeviceMemory: methods never modify their inputs and return new memory, so a session keeps its old
// memory until the executor swaps in the new one (never half-updated).
//
// Thread safety: NOT thread-safe. Exactly one thread (the core's executor) calls a backend.
// DeviceMemory objects may be destroyed on any thread.
#ifndef BRT_SERVER_MODEL_BACKEND_H_
#define BRT_SERVER_MODEL_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace brt {

// Model memory of one session (batch row), on the backend's device.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
};
using MemoryPtr = std::shared_ptr<const DeviceMemory>;

// What the export's brt_meta.json says, plus where it runs.
struct ModelMetadata {
  std::string name;
  std::string fingerprint;
  std::string tokenizer_sha256;
  int32_t window = 0;       // W
  int32_t n_state = 0;      // S
  int32_t n_layers = 0;     // L
  int32_t n_recurrent = 0;  // R
  int32_t n_heads = 0;
  int32_t head_dim = 0;
  int32_t d_model = 0;
  int32_t vocab_size = 0;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int64_t parameters = 0;
  std::string device = "cpu";
  std::string dtype = "float32";
  uint64_t state_bytes = 0;  // bytes of DeviceMemory per session
};

struct ScoreBlocksRow {
  std::vector<int32_t> tokens;  // N*W tokens, the same N for every row of a call
  MemoryPtr memory;             // at a block boundary
};
struct ScoreBlocksResult {
  std::vector<float> target_logprobs;  // N*W-1: logprob of tokens[i+1] after tokens[..i]
  std::vector<float> topk_logprobs;    // N*W*top_k, row-major
  std::vector<int32_t> topk_ids;       // N*W*top_k
  std::vector<float> next_logprobs;    // V: distribution of the token after the last one
  MemoryPtr memory;
};

struct DecodeRow {
  int32_t token = 0;
  int64_t position = 0;
  MemoryPtr memory;
};
struct DecodeResult {
  std::vector<float> logprobs;  // V: distribution of the next token
  MemoryPtr memory;
};

// One tensor of a session's memory copied to host bytes (row-major, the device dtype's exact bytes),
// for snapshots.
struct HostTensor {
  std::string dtype;           // "float32", "bfloat16" or "float16"
  std::vector<int64_t> shape;  // kv: (1, L, 2, H, 2W, dh); state: (1, R, 3, S, D)
  std::string data;            // product(shape) * element size bytes
};
struct HostMemory {
  HostTensor kv;
  HostTensor state;
};

class ModelBackend {
 public:
  virtual ~ModelBackend() = default;
  virtual const ModelMetadata& metadata() const = 0;
  // Called once on the executor thread before any other call from it (per-thread runtime setup, such as
  // LibTorch's intra-op thread count, which OpenMP keeps per thread).
  virtual void InitExecutorThread() {}
  // Memory of a fresh document (before BOS).
  virtual absl::StatusOr<MemoryPtr> InitialState() = 0;
  // Runs N whole blocks for each row in one batched call. REQUIRES: rows non-empty, equal sizes, a
  // multiple of W; top_k in [0, vocab].
  virtual absl::StatusOr<std::vector<ScoreBlocksResult>> ScoreBlocks(
      const std::vector<ScoreBlocksRow>& rows, int top_k) = 0;
  // Feeds one token per row in one batched call. REQUIRES: rows non-empty.
  virtual absl::StatusOr<std::vector<DecodeResult>> DecodeStep(
      const std::vector<DecodeRow>& rows) = 0;

  // Session persistence. ExportMemory copies `memory` to host bytes, exactly; ImportMemory puts such
  // bytes back on the device. ImportMemory checks dtype and shapes against this model's memory
  // (INVALID_ARGUMENT naming both). Default: UNIMPLEMENTED (a backend without snapshots).
  virtual absl::StatusOr<HostMemory> ExportMemory(const MemoryPtr& memory) {
    return absl::UnimplementedError("this model backend cannot export session memory");
  }
  virtual absl::StatusOr<MemoryPtr> ImportMemory(const HostMemory& memory) {
    return absl::UnimplementedError("this model backend cannot import session memory");
  }
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_BACKEND_H_
