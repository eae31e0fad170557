#include "server/runner_flags.h"

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, device, "cpu", "Device for the model and session memory: cpu or cuda:N");
ABSL_FLAG(std::string, dtype, "float32", "Model/memory dtype: float32, bfloat16 or float16 (refused at start where the model cannot run in it, "
          "saying why: on CPU, and the shipped export's attention mask overflows float16)");
ABSL_FLAG(int, threads, 0,
          "Intra-op threads for LibTorch's block scoring, and row-shard workers; 0 = the CPUs this process "
          "may run on (its affinity mask: a container's cpuset counts, a CPU quota does not)");
ABSL_FLAG(int, decode_threads, 0,
          "Intra-op threads for decode steps when --row_shards=1; 0 = --threads. Switching the thread "
          "count between steps makes results depend on history in the last bits");
ABSL_FLAG(int, row_shards, 0,
          "CPU: batched model calls of >= --row_shard_min_rows rows are split into this many shards, run "
          "at once on workers of one intra-op thread each, and every decode step runs on them (many "
          "small operations are faster on one thread each than on several). 0 = --threads; 1 = off");
ABSL_FLAG(int, row_shard_min_rows, 2, "Fewest rows of a block-scoring call that is split into shards");
ABSL_FLAG(std::string, cpu_packed_weights, "auto",
          "CPU, float32: true runs the model's matrix products through XNNPACK with weights packed once "
          "at load (the export's pack_cpu; about the weights' size again in memory; a row's results then "
          "do not depend on its batch in any bit); transposed runs them through OpenBLAS with weights "
          "transposed once at load (the export's pack_cpu_transposed; no per-call repacking); false runs "
          "LibTorch's default products (OpenBLAS); auto packs unless the CPU is x86-64 without AVX-512, "
          "where XNNPACK's kernels ran at 0.4x OpenBLAS's (with AVX-512 at 1.6x), and is transposed there");
ABSL_FLAG(bool, freeze_model, true,
          "Freeze the TorchScript module once loaded (inline its calls, its weights as constants): the "
          "same results in every bit, with less interpreter work per model call; false runs it as exported");
ABSL_FLAG(bool, native_decode, true,
          "CPU, float32: run decode steps through the server's own C++ decode step (weights packed once at "
          "load, attention read in place) instead of the export's TorchScript one: the same function to fp32 "
          "rounding; an export of another layout keeps its own (the log says why)");
ABSL_FLAG(bool, decode_team, true,
          "With --native_decode and row shards: the shard workers compute each decode step together (each "
          "matrix product split by output columns, so the weights are read once per step; each row's "
          "attention on one worker): bitwise the results of one thread; false gives each worker its own "
          "rows, each reading all the weights");
ABSL_FLAG(bool, native_spans, true,
          "With --native_decode: prompts (spans of a block fed at once, --feed_spans) go through the native "
          "decoder too, their tokens as rows of one call, alone or with the step's decode rows; false feeds "
          "them through the export's span_slots / mixed_slots. Spans whose every position is scored (Score "
          "calls' tails, echo) always run in the export");
ABSL_FLAG(uint32_t, initial_session_slots, 64,
          "Session memory slots allocated (and touched) at startup, at most --max_sessions; the pools double "
          "when more sessions are loaded (see --pool_growth), and a slot beyond these is faulted in by its "
          "session's first writes (on the dev VM a new process's first 32 sessions got their first token "
          "after ~131 ms starting from 8 slots, ~52 ms from 64). 0.85 MB each for the shipped model");
ABSL_FLAG(std::string, pool_growth, "in_place",
          "How the session memory pools grow past --initial_session_slots on a CPU: in_place (views of "
          "address space reserved for --max_sessions slots, resident only as used: growing copies nothing "
          "and a new slot's pages are faulted in by its session's first writes) or copy (new pools and a "
          "copy of the old ones on the executor, as on a GPU: on the dev VM every generating session "
          "waited ~160 ms at 32 -> 64 slots). in_place falls back to copy when the address space cannot "
          "be reserved");
ABSL_FLAG(std::string, native_simd, "auto",
          "The most the native decode step's kernels use: auto (the best this CPU has), avx512, avx2 or "
          "portable. AVX-512 and AVX2 give bitwise the same results; on the project's AVX-512 host the "
          "decode step ran 1.26-1.62x faster at 1-64 rows with AVX-512 (benchmarks/README.md)");

ABSL_FLAG(std::string, pin_workers, "auto",
          "CPU: pin each row-shard worker to its own CPU: auto (when the workers, --row_shards, are as many "
          "as the CPUs this process may run on), on (always, round robin over those CPUs) or off. On the "
          "project's 2-core VM the decode team's two workers, left to the scheduler, often took turns on one "
          "core; pinned, 32 sessions generated 1.47x faster through gRPC (benchmarks/README.md)");

namespace brt::startup {

absl::StatusOr<ModelRunnerOptions> RunnerOptionsFromFlags(const std::string& model_path,
                                                          const std::string& tokenizer_sha256, uint32_t max_slots) {
  ModelRunnerOptions options;
  options.model_path = model_path;
  options.tokenizer_sha256 = tokenizer_sha256;
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.decode_threads = absl::GetFlag(FLAGS_decode_threads);
  options.shards = absl::GetFlag(FLAGS_row_shards);
  options.shard_min_rows = absl::GetFlag(FLAGS_row_shard_min_rows);
  if (options.shards < 0 || options.shard_min_rows < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--row_shards must be >= 0 (0 = --threads, 1 = off) and --row_shard_min_rows >= 1; got ",
        options.shards, " and ", options.shard_min_rows));
  }
  options.max_slots = static_cast<int32_t>(max_slots);
  options.initial_slots = static_cast<int32_t>(absl::GetFlag(FLAGS_initial_session_slots));
  auto pool_growth = ParsePoolGrowth(absl::GetFlag(FLAGS_pool_growth));
  if (!pool_growth.ok()) return pool_growth.status();
  options.pool_growth = *pool_growth;
  auto packed = ParsePackedWeights(absl::GetFlag(FLAGS_cpu_packed_weights));
  if (!packed.ok()) return packed.status();
  options.cpu_packed_weights = *packed;
  options.freeze = absl::GetFlag(FLAGS_freeze_model);
  options.native_decode = absl::GetFlag(FLAGS_native_decode);
  options.decode_team = absl::GetFlag(FLAGS_decode_team);
  options.native_spans = absl::GetFlag(FLAGS_native_spans);
  auto simd = ParseNativeSimd(absl::GetFlag(FLAGS_native_simd));
  if (!simd.ok()) return simd.status();
  options.native_simd = *simd;
  auto pin = ParsePinWorkers(absl::GetFlag(FLAGS_pin_workers));
  if (!pin.ok()) return pin.status();
  options.pin_workers = *pin;
  return options;
}

void LogRunnerFallbacks(const ModelRunner& runner) {
  if (!runner.freeze_error().empty()) {
    std::fprintf(stderr, "brt-server: --freeze_model: running the module as exported: %s\n",
                 runner.freeze_error().c_str());
  }
  if (!runner.native_decode_error().empty()) {
    std::fprintf(stderr, "brt-server: --native_decode: the export's decode step runs: %s\n",
                 runner.native_decode_error().c_str());
  }
  if (!runner.pack_error().empty()) {
    std::fprintf(stderr, "brt-server: --cpu_packed_weights: packing failed, running unpacked: %s\n",
                 runner.pack_error().c_str());
  }
}

std::string DescribeRunner(const ModelRunner& runner) {
  std::string out = runner.packed_weights()       ? ", XNNPACK packed weights"
                    : runner.transposed_weights() ? ", OpenBLAS products, weights transposed at load"
                    : runner.auto_unpacked()      ? ", OpenBLAS products (--cpu_packed_weights=auto: no AVX-512)"
                                                  : "";
  if (runner.frozen()) out += ", frozen";
  if (runner.native_decode()) {
    absl::StrAppend(&out, ", native decode step (", runner.decode_team() ? "team, " : "",
                    SimdLevelName(runner.native_simd()), ")");
  }
  const std::vector<int> pinned = runner.pinned_cpus();
  if (!pinned.empty()) absl::StrAppend(&out, ", row workers pinned to CPUs ", CpuList(pinned));
  return out;
}

}  // namespace brt::startup
