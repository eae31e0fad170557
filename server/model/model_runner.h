// ModelRunner: runs a TorchScript BRT export with LibTorch. The only component that includes torch.
//
// Create() loads brt.pt (export format 2, "slots-v2") and its brt_meta.json, checks the export against
// the tokenizer (sha256), moves the module to the device and dtype and sets the intra-op thread count.
// It keeps the session memory pools (one key/value ring tensor per layer and one state tensor, each
// with a leading slot dimension) on the device, grows them by doubling up to max_slots, and passes
// them with slot indices to the export's methods, which read and write them in place. Every torch
// call runs under c10::InferenceMode and every c10::Error / std::exception becomes an absl::Status.
//
// Thread safety: NOT thread-safe (see ModelBackend); one executor thread owns it. Internally a call may
// run its rows in shards on the runner's own worker threads (ShardPool), and returns when they are done.
#ifndef BRT_SERVER_MODEL_MODEL_RUNNER_H_
#define BRT_SERVER_MODEL_MODEL_RUNNER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/backend.h"
#include "server/model/cpu_affinity.h"
#include "server/model/panel_matrix.h"

namespace brt {

// ModelRunnerOptions::cpu_packed_weights.
enum class PackedWeights { kAuto, kOn, kOff, kTransposed };
// ModelRunnerOptions::pool_growth; parsed from "in_place" or "copy" (--pool_growth).
enum class PoolGrowth { kInPlace, kCopy };
absl::StatusOr<PoolGrowth> ParsePoolGrowth(const std::string& value);
// ModelRunnerOptions::native_simd from "auto", "avx512", "avx2" or "portable" (--native_simd).
absl::StatusOr<SimdLevel> ParseNativeSimd(const std::string& value);

// "auto", "true", "transposed" or "false" (--cpu_packed_weights); INVALID_ARGUMENT naming them otherwise.
absl::StatusOr<PackedWeights> ParsePackedWeights(const std::string& value);

struct ModelRunnerOptions {
  std::string model_path;  // the TorchScript export (brt.pt)
  // sha256 hex of the tokenizer model the server loaded; Create fails with FAILED_PRECONDITION when
  // the export's tokenizer_sha256 differs. Empty skips the check.
  std::string tokenizer_sha256;
  std::string device = "cpu";  // "cpu" or "cuda:N"
  std::string dtype =
      "float32";    // "float32", "bfloat16" or "float16" (memory dtype; logprobs stay fp32)
  int threads = 0;  // intra-op threads for block scoring; 0 = UsableCpus() (the process's affinity mask)
  // Intra-op threads for decode steps when row shards are off; 0 = `threads`. A thread count that
  // differs from `threads` is switched between calls on the executor thread.
  int decode_threads = 0;
  // Row shards (CPU only; see shard_pool.h): a batched call of at least shard_min_rows rows is split
  // into up to `shards` parts run at once on workers of one intra-op thread each, and every decode
  // step runs on them (one row on one worker). 0 = `threads`; 1 = off (calls run on the executor).
  // Block scoring of fewer rows stays on the executor with `threads` intra-op threads.
  int shards = 0;
  int shard_min_rows = 2;
  // TorchScript's profiling executor (re-specialises methods on new input shapes). Off by default: see
  // model_runner.cc, InitExecutorThread.
  bool jit_optimize = false;
  // CPU, float32: whether to call the export's pack_cpu() when it has one, so that its matrix products run
  // through XNNPACK with weights packed once at load (no per-call repacking; about the weights' size again
  // in memory), instead of ATen's products (OpenBLAS). kAuto packs where XNNPACK has been measured faster
  // (PackedWeightsPayOff). Packed, a row's results are also bitwise independent of its batch.
  // kTransposed (and kAuto where XNNPACK does not pay off) calls the export's pack_cpu_transposed()
  // instead when it has one: OpenBLAS's products then read the weights transposed once at load rather
  // than repacking them on every call (0.66-0.82x the products' time on an AVX2 host; another copy of
  // the weights in memory). Numbers differ from unpacked by fp32 rounding (fused products).
  PackedWeights cpu_packed_weights = PackedWeights::kAuto;
  // Freeze the module once loaded and packed (torch::jit::freeze_module, keeping the methods the runner
  // calls): submodule and function calls inlined, parameters and weights turned into constants, so each
  // call interprets fewer instructions (a one-row decode step spent about as long in TorchScript's
  // interpreter as in its matrix products). Results are bitwise the unfrozen ones'. false: as exported.
  // Not with XNNPACK's packed weights (kOn, or kAuto on AVX-512), which cannot be frozen: freeze_error().
  bool freeze = true;
  // CPU, float32: run decode steps (decode_slots / decode_range) through NativeDecoder (native_decoder.h),
  // the export's step computed in C++ with weights packed once, instead of the export's TorchScript. The
  // same function to fp32 rounding. When the export is not the BRT layout it knows, the export's own step
  // runs and native_decode_error() says why. Blocks and spans whose every position is scored always run
  // in the export (and, with native_spans off, every span and mixed call).
  bool native_decode = true;
  // With native_decode and row shards: every worker computes each decode step together (each matrix
  // product split by output columns, so the weights are read once per step, not once per shard; each
  // row's attention on one worker), bitwise the same results as one thread. false: each worker decodes
  // its own shard of the rows, as the export's step does.
  bool decode_team = true;
  // With native_decode: a prompt's span (FeedSpans and DecodeAndFeedSpans without per-position scores)
  // is fed through the native decoder too, its tokens as consecutive rows of one call, in order, exactly
  // as one token per call; with decode rows, in the same call. false: the export's span_slots and
  // mixed_slots. Spans whose every position is scored always run in the export (the engine asks that
  // for every Score call's spans, a rewind's re-read included, so that a re-read rounds as the first read).
  bool native_spans = true;
  // Slots the pools may grow to (the engine's --max_sessions); they start with initial_slots (at least
  // 1, at most max_slots) and double.
  int32_t max_slots = 1024;
  int32_t initial_slots = 8;
  // How the pools grow on a CPU (a GPU's always as kCopy). kInPlace: the pools are views of address
  // space reserved for max_slots slots (pool_memory.h; resident only as slots are used), so growing
  // extends them in place, with no copy, and a new slot's pages are faulted in by its session's first
  // writes. kCopy: new, zeroed pools and a copy of the old ones, on the executor (every running session
  // waited ~160 ms at 32 -> 64 slots of the shipped model on the project's VM); also what kInPlace falls
  // back to when the address space cannot be reserved (pools_in_place() says which).
  PoolGrowth pool_growth = PoolGrowth::kInPlace;
  // The most the native decoder's kernels use (panel_matrix.h SimdLevel): kAvx512 means the best this
  // CPU has. AVX-512 and AVX2 give bitwise the same results (on the project's AVX-512 host the decode step
  // ran 1.26-1.62x faster at 1-64 rows with AVX-512, benchmarks/README.md); lower levels are for
  // comparisons. Process-wide: Create applies it (LimitSimd).
  SimdLevel native_simd = SimdLevel::kAvx512;
  // Whether each row-shard worker is pinned to its own CPU (cpu_affinity.h: on 2 cores the decode team's
  // two workers otherwise often took turns on one core). kAuto: when the workers are as many as the CPUs
  // this process may run on.
  PinWorkers pin_workers = PinWorkers::kAuto;
};

class ModelRunner : public ModelBackend {
 public:
  // Whether XNNPACK's packed products beat OpenBLAS's on this CPU, for PackedWeights::kAuto: true unless
  // it is an x86-64 CPU without AVX-512F. Measured with the shipped model (benchmarks/README.md): with
  // AVX-512 (the first dev VM) XNNPACK ran the 1024^2 GEMM at ~300 GFLOP/s against OpenBLAS's ~190 and
  // Score at 8 sessions 1.2x; on an AVX2-only AMD EPYC (family 25) 67 against 166 GFLOP/s, and Score at
  // 8 sessions ran half as fast packed (5,400 vs 10,500 tokens/s), Generate about the same.
  static bool PackedWeightsPayOff();
  // NOT_FOUND: no such file; INVALID_ARGUMENT: bad device/dtype/metadata; FAILED_PRECONDITION:
  // tokenizer mismatch or device unavailable; INTERNAL: torch errors.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(const ModelRunnerOptions& options);
  ~ModelRunner() override;

  const ModelMetadata& metadata() const override;
  void InitExecutorThread() override;
  absl::Status InitSlots(const std::vector<int32_t>& slots) override;
  absl::Status CopySlot(int32_t from, int32_t to) override;
  absl::StatusOr<std::vector<ScoreBlocksResult>> ScoreBlocks(
      const std::vector<ScoreBlocksRow>& rows, int top_k) override;
  absl::StatusOr<std::vector<DecodeResult>> DecodeStep(const std::vector<DecodeRow>& rows) override;
  // On the row-shard workers when they are on, else (a CUDA model, or one row shard) on workers kept for
  // this alone when there is more than one thread (contiguous ranges of i, one per worker).
  void ForEachRow(int64_t n, const std::function<void(int64_t)>& fn) override;
  // True when the export has span_slots (exports made before it feed spans token by token).
  bool SupportsSpans() const override;
  // Whether the export's pack_cpu() ran (see ModelRunnerOptions::cpu_packed_weights), and, when it was
  // asked for and failed, why (the model then runs unpacked).
  bool packed_weights() const;
  const std::string& pack_error() const;
  // Whether PackedWeights::kAuto left a CPU float32 model unpacked (no AVX-512: PackedWeightsPayOff).
  bool auto_unpacked() const;
  // Whether the module runs frozen (ModelRunnerOptions::freeze), and, when it was asked for and failed
  // (with XNNPACK's packed weights, which cannot be frozen), why: the module then runs as exported.
  bool frozen() const;
  const std::string& freeze_error() const;
  // Whether decode steps run through NativeDecoder (ModelRunnerOptions::native_decode), and, when it was
  // asked for and the export or device does not allow it, why.
  bool native_decode() const;
  const std::string& native_decode_error() const;
  // Whether native decode steps run as a team of the shard workers (ModelRunnerOptions::decode_team).
  bool decode_team() const;
  // The instruction set the native decoder's kernels run with (the CPU's best, capped by the option).
  SimdLevel native_simd() const;
  // The CPU each row-shard worker is pinned to (ModelRunnerOptions::pin_workers); empty when they are not.
  std::vector<int> pinned_cpus() const;
  // Whether the export's pack_cpu_transposed() ran (see ModelRunnerOptions::cpu_packed_weights).
  bool transposed_weights() const;
  absl::StatusOr<std::vector<SpanResult>> FeedSpans(const std::vector<SpanRow>& rows, int top_k,
                                                    bool all_positions) override;
  // True when the export has mixed_slots: DecodeAndFeedSpans then runs both kinds of rows in one model
  // call per shard (their matrix products share one read of the weights).
  bool SupportsMixedCalls() const override;
  absl::StatusOr<MixedResult> DecodeAndFeedSpans(const std::vector<DecodeRow>& decode,
                                                 const std::vector<SpanRow>& spans, int top_k,
                                                 bool all_positions) override;
  absl::StatusOr<HostMemory> ExportSlot(int32_t slot) override;
  absl::Status ExportSlotInto(int32_t slot, HostMemory* out) override;
  ExportSize ExportBytes() const override;
  absl::Status ImportSlot(int32_t slot, const HostMemory& memory) override;
  // Slots the pools hold now (grows on demand).
  int32_t pool_capacity() const;
  // Whether the pools are views of reserved address space and grow in place (ModelRunnerOptions::pool_growth).
  bool pools_in_place() const;

  // The runner's internals (model_runner_impl.h), shared by its translation units; not an API.
  struct Impl;

 private:
  explicit ModelRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_MODEL_RUNNER_H_
