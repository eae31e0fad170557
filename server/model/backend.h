// ModelBackend: the torch-free interface the core uses to run a BRT export (see model/README.md,
// "Export contract", format 2). ModelRunner (model_runner.h) implements it with LibTorch; tests may
// use a fake.
//
// Resident session memory. Every session's model memory (its key/value rings and recurrent state)
// lives in one slot of pools that the backend keeps on its device. A slot is a small integer in
// [0, max_slots) chosen by the caller (the core's SlotAllocator); the backend grows its pools on
// demand up to max_slots. Batched calls name the rows' slots and read and write the pools in place:
// no session memory is concatenated, split or copied per call. A slot's contents are only defined
// after InitSlots, CopySlot or ImportSlot.
//
// Thread safety: NOT thread-safe. Exactly one thread (the core's executor) calls a backend, except
// metadata(), which is immutable after construction and safe from any thread.
#ifndef BRT_SERVER_MODEL_BACKEND_H_
#define BRT_SERVER_MODEL_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace brt {

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
  uint64_t state_bytes = 0;  // device bytes of one slot (one session's memory)
};

struct ScoreBlocksRow {
  int32_t slot = 0;
  int64_t start = 0;            // position of tokens[0]; a multiple of W
  std::vector<int32_t> tokens;  // N*W tokens, the same N for every row of a call
};
struct ScoreBlocksResult {
  std::vector<float> target_logprobs;  // N*W-1: logprob of tokens[i+1] after tokens[..i]
  std::vector<float> topk_logprobs;    // N*W*top_k, row-major
  std::vector<int32_t> topk_ids;       // N*W*top_k
  std::vector<float> next_logprobs;    // V: distribution of the token after the last one
};

// A span: 1..W tokens of one row that stay inside one block (start % W + tokens.size() <= W), fed at once
// as if token by token (the prompt of a Generate call, a Score call's text that does not fill a block).
struct SpanRow {
  int32_t slot = 0;
  int64_t start = 0;            // position of tokens[0]
  std::vector<int32_t> tokens;  // rows of one call may have different lengths
};
// A span's result has ScoreBlocksResult's fields, sized by the row's n = tokens.size(): target_logprobs
// n-1 and top-k n*top_k (both empty when the call did not ask for every position), next_logprobs V.
using SpanResult = ScoreBlocksResult;

struct DecodeRow {
  int32_t slot = 0;
  int32_t token = 0;
  int64_t position = 0;  // the token's position; rows may sit at different offsets in their blocks
};
struct DecodeResult {
  std::vector<float> logprobs;  // V: distribution of the next token
};
// DecodeAndFeedSpans' results: the decode rows' and the span rows', each in its rows' order.
struct MixedResult {
  std::vector<DecodeResult> decode;
  std::vector<SpanResult> spans;
};

// One tensor of a session's memory copied to host bytes (row-major, the device dtype's exact bytes),
// for snapshots.
struct HostTensor {
  std::string dtype;           // "float32", "bfloat16" or "float16"
  std::vector<int64_t> shape;  // kv: (1, L, 2, H, 2W, dh); state: (1, R, 3, S, D)
  std::string data;            // product(shape) * element size bytes
};
// A slot's memory on the host. kv packs every layer's ring into 2W slots (a layer whose ring holds W
// tokens uses ring slots [0, W); the rest are zero), so the snapshot shape does not depend on which
// layers are recurrent.
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

  // Sets each slot to the memory of a fresh document (before BOS), growing the pools if needed.
  // INVALID_ARGUMENT for a slot outside [0, max_slots).
  virtual absl::Status InitSlots(const std::vector<int32_t>& slots) = 0;
  // Copies slot `from` to slot `to` (fork).
  virtual absl::Status CopySlot(int32_t from, int32_t to) = 0;
  // Runs N whole blocks for each row in one batched call and advances the rows' slots in place.
  // REQUIRES: rows non-empty, distinct slots, equal token counts, a multiple of W; top_k in [0, V].
  virtual absl::StatusOr<std::vector<ScoreBlocksResult>> ScoreBlocks(
      const std::vector<ScoreBlocksRow>& rows, int top_k) = 0;
  // Feeds one token per row in one batched call and advances the rows' slots in place (the recurrent
  // state update runs only for rows whose token completes a block). REQUIRES: rows non-empty, distinct
  // slots.
  virtual absl::StatusOr<std::vector<DecodeResult>> DecodeStep(const std::vector<DecodeRow>& rows) = 0;
  // Runs fn(i) for every i in [0, n), possibly several at once on the backend's CPU workers (idle between
  // model calls), and returns when all have returned: the core's per-row work between steps (drawing each
  // generating session's next token). Calls fn(i) and fn(j) may run at the same time: they must touch
  // disjoint state. Default: in order, on the calling thread.
  virtual void ForEachRow(int64_t n, const std::function<void(int64_t)>& fn) {
    for (int64_t i = 0; i < n; ++i) fn(i);
  }

  // Whether FeedSpans works (the export has span_slots). When false the core feeds spans token by token.
  virtual bool SupportsSpans() const { return false; }
  // Feeds each row's span in one batched call and advances the rows' slots in place, the state update
  // included for rows whose span completes its block. all_positions: also the per-token log-probs (and
  // top-k), for scoring; else only each row's next-token distribution (a prompt).
  // REQUIRES: rows non-empty, distinct slots, each span inside one block; top_k in [0, V].
  virtual absl::StatusOr<std::vector<SpanResult>> FeedSpans(const std::vector<SpanRow>& rows, int top_k,
                                                            bool all_positions) {
    return absl::UnimplementedError("this model backend cannot feed spans");
  }

  // Whether DecodeAndFeedSpans runs both kinds of rows in one model call (else it is the two calls).
  virtual bool SupportsMixedCalls() const { return false; }
  // DecodeStep(decode) and FeedSpans(spans, top_k, all_positions) at once, on distinct slots: a backend
  // may run them as one model call whose matrix products cover both kinds of rows (on a CPU a call's
  // fixed cost is reading the weights). Same results to fp32 rounding. REQUIRES: as both calls (either
  // list may be empty, not both). Default: the two calls, decode first.
  virtual absl::StatusOr<MixedResult> DecodeAndFeedSpans(const std::vector<DecodeRow>& decode,
                                                         const std::vector<SpanRow>& spans, int top_k,
                                                         bool all_positions) {
    MixedResult out;
    if (!decode.empty()) {
      auto d = DecodeStep(decode);
      if (!d.ok()) return d.status();
      out.decode = *std::move(d);
    }
    if (!spans.empty()) {
      auto s = FeedSpans(spans, top_k, all_positions);
      if (!s.ok()) return s.status();
      out.spans = *std::move(s);
    }
    return out;
  }

  // Session persistence. ExportSlot copies a slot to host bytes, exactly; ImportSlot puts such bytes
  // into a slot. ImportSlot checks dtype and shapes against this model's memory (INVALID_ARGUMENT
  // naming both). Default: UNIMPLEMENTED (a backend without snapshots).
  virtual absl::StatusOr<HostMemory> ExportSlot(int32_t slot) {
    return absl::UnimplementedError("this model backend cannot export session memory");
  }
  // ExportSlot into `out`, whose buffers a backend may reuse (a recycled checkpoint's: no new pages to
  // touch). Default: ExportSlot, moved in.
  virtual absl::Status ExportSlotInto(int32_t slot, HostMemory* out) {
    absl::StatusOr<HostMemory> m = ExportSlot(slot);
    if (!m.ok()) return m.status();
    *out = *std::move(m);
    return absl::OkStatus();
  }
  virtual absl::Status ImportSlot(int32_t slot, const HostMemory& memory) {
    return absl::UnimplementedError("this model backend cannot import session memory");
  }
  // Bytes of the kv and state buffers ExportSlot fills (so that host memory for checkpoints can be
  // touched ahead of need); {0, 0} where unknown.
  struct ExportSize {
    size_t kv = 0;
    size_t state = 0;
  };
  virtual ExportSize ExportBytes() const { return {}; }
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_BACKEND_H_
