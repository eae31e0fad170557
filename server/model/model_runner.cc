// ModelRunner: loading and block scoring (the token-row calls are in model_runner_rows.cc; a slot's
// memory - init, copy, export, import - in model_runner_slots.cc). One of the four translation units that
// include LibTorch's full headers (with those two and tensor_io.cc; each costs ~30 s to compile).
#include "server/model/model_runner.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/export_metadata.h"
#include "server/model/model_runner_impl.h"
#include "server/model/shard_pool.h"
#include "server/model/tensor_io.h"
#include "server/model/torch_threads.h"

namespace brt {

ModelRunner::ModelRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelRunner::~ModelRunner() = default;

const ModelMetadata& ModelRunner::metadata() const { return impl_->meta; }

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    const ModelRunnerOptions& options) {
  if (!std::ifstream(options.model_path).good()) {
    return absl::NotFoundError(absl::StrCat("model export not found: ", options.model_path));
  }
  auto impl = std::make_unique<Impl>();
  at::ScalarType dtype;
  if (options.dtype == "float32") {
    dtype = at::kFloat;
  } else if (options.dtype == "bfloat16") {
    dtype = at::kBFloat16;
  } else if (options.dtype == "float16") {
    dtype = at::kHalf;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype must be float32, bfloat16 or float16, got '", options.dtype, "'"));
  }
  try {
    impl->device = c10::Device(options.device);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be 'cpu' or 'cuda:N', got '", options.device, "'"));
  }
  if (impl->device.is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", options.device, " requested but CUDA is not available"));
  }
  int threads = options.threads > 0 ? options.threads : UsableCpus();
  at::set_num_threads(threads);
  impl->threads = threads;
  impl->decode_threads = options.decode_threads > 0 ? options.decode_threads : threads;
  impl->jit_optimize = options.jit_optimize;

  torch::jit::setGraphExecutorOptimize(options.jit_optimize);  // see InitExecutorThread
  torch::jit::ExtraFilesMap extra{{kMetaFile, ""}};
  try {
    c10::InferenceMode guard;
    impl->module = torch::jit::load(options.model_path, at::kCPU, extra);
    impl->module.eval();
    impl->has_spans = impl->module.find_method("span_slots").has_value();
    impl->has_mixed = impl->has_spans && impl->module.find_method("mixed_slots").has_value();
    impl->has_ranges = impl->module.find_method("decode_range").has_value() &&
                       impl->module.find_method("finish_range").has_value();
    impl->module.to(impl->device);
    if (dtype != at::kFloat) {
      // Floating-point parameters and buffers only: Module::to(dtype) in C++ would also turn the export's
      // integer tables (position buckets, indices) into bfloat16 (Python's .to leaves them alone).
      auto convert = [dtype](at::Tensor t) {
        if (t.is_floating_point()) t.set_data(t.to(dtype));
      };
      for (const at::Tensor& t : impl->module.parameters()) convert(t);
      for (const at::Tensor& t : impl->module.buffers()) convert(t);
    }
  } catch (const std::exception& e) {
    return TorchError("loading the TorchScript export failed", e);
  }

  auto parsed = ParseExportMetadata(extra[kMetaFile], options.model_path, options.tokenizer_sha256);
  if (!parsed.ok()) return parsed.status();
  ModelMetadata& meta = impl->meta;
  meta = std::move(parsed->meta);
  impl->ring = std::move(parsed->ring);
  meta.device = impl->device.str();
  meta.dtype = options.dtype;

  if (options.max_slots <= 0) {
    return absl::InvalidArgumentError("max_slots must be > 0");
  }
  impl->dtype = dtype;
  impl->max_slots = options.max_slots;
  uint64_t elems = static_cast<uint64_t>(meta.n_recurrent) * 3 * meta.n_state * meta.d_model;
  for (int64_t c : impl->ring) elems += 2ull * meta.n_heads * c * meta.head_dim;
  meta.state_bytes = elems * c10::elementSize(dtype);
  impl->kv.resize(meta.n_layers);
  if (impl->device.is_cpu() && options.pool_growth != PoolGrowth::kCopy) {
    std::vector<int64_t> slot_bytes;
    for (const auto& shape : impl->PoolShapes()) {
      slot_bytes.push_back(static_cast<int64_t>(Elements(shape) * c10::elementSize(dtype)));
    }
    impl->pool_memory = PoolMemory::Create(slot_bytes, options.max_slots);
  }
  try {
    c10::InferenceMode guard;
    impl->Reserve(std::max(0, std::min(options.initial_slots, options.max_slots) - 1));
  } catch (const std::exception& e) {
    return TorchError("allocating the session memory pools failed", e);
  }
  // One token through slot 0 (scratch: no session holds a slot yet), before freezing: a dtype the device
  // has no kernels for (float16 on CPU) fails here with LibTorch's reason, not in a session's first call
  // (where a frozen module's interpreter can crash on it instead of throwing).
  try {
    c10::InferenceMode guard;
    const at::Tensor zero = LongTensor({0}, impl->device);
    impl->module.get_method("init_slots")({zero, impl->KvList(), impl->state});
    impl->module.get_method("decode_slots")({LongTensor({meta.bos_id}, impl->device), zero, zero, impl->KvList(),
                                             impl->state});
    impl->module.get_method("init_slots")({zero, impl->KvList(), impl->state});
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype=", options.dtype, " on ", impl->device.str(), ": the model cannot run (",
        TorchError("a probe call", e).message(), "); float32 and bfloat16 run on CPU and CUDA"));
  }
  const int shards = options.shards > 0 ? options.shards : threads;
  if (shards > 1 && !impl->device.is_cuda()) {
    impl->shard_min_rows = std::max(1, options.shard_min_rows);
    impl->shards = std::make_unique<ShardPool>(
        shards,
        [] {
          SetIntraOpThreads(1);
          // XNNPACK (packed weights) runs on the calling thread, not on LibTorch's one process-wide
          // pthreadpool, which serialises its callers: two shards would otherwise take turns.
          RunPoolOpsOnThisThread();
          torch::jit::setGraphExecutorOptimize(false);  // thread-local, as on the executor
        },
        "brt-row", WorkerCpus(options.pin_workers, shards, AllowedCpus()));
  }
  if (impl->shards == nullptr && threads > 1) {
    // No row workers (a CUDA model, or --row_shards=1): workers for ForEachRow's token draws alone, which
    // run on the host whatever the device (512 sampled rows took ~45 ms a step on one thread).
    impl->draw_pool = std::make_unique<ShardPool>(threads, [] {}, "brt-draw");
  }
  const bool pack = options.cpu_packed_weights == PackedWeights::kOn ||
                    (options.cpu_packed_weights == PackedWeights::kAuto && PackedWeightsPayOff());
  // Without XNNPACK, OpenBLAS's products read weights transposed once at load, where the export can.
  const bool transpose = options.cpu_packed_weights == PackedWeights::kTransposed ||
                         (options.cpu_packed_weights == PackedWeights::kAuto && !pack);
  impl->auto_unpacked = !pack && options.cpu_packed_weights == PackedWeights::kAuto &&
                        impl->device.is_cpu() && dtype == at::kFloat;
  if (transpose && impl->device.is_cpu() && dtype == at::kFloat &&
      impl->module.find_method("pack_cpu_transposed").has_value()) {
    try {
      c10::InferenceMode guard;
      // Plain tensors: every shard shares the one module, as unpacked.
      impl->transposed_weights = impl->module.get_method("pack_cpu_transposed")({}).toBool();
    } catch (const std::exception& e) {
      return TorchError("transposing the weights (--cpu_packed_weights) failed", e);
    }
  }
  if (pack && impl->device.is_cpu() && dtype == at::kFloat &&
      impl->module.find_method("pack_cpu").has_value()) {
    try {
      c10::InferenceMode guard;
      if (impl->shards != nullptr) {
        // Copied before packing: a copy of packed products would share their XNNPACK operators.
        impl->lanes.push_back(impl->module);
        for (int i = 1; i < impl->shards->threads(); ++i) impl->lanes.push_back(impl->module.deepcopy());
      }
      impl->packed_weights = impl->module.get_method("pack_cpu")({}).toBool();
      for (size_t i = 1; i < impl->lanes.size(); ++i) impl->lanes[i].get_method("pack_cpu")({});
    } catch (const std::exception& e) {
      // Not fatal (an XNNPACK that refuses this CPU, say): the model runs unpacked, and says why.
      impl->pack_error = e.what();
      impl->lanes.clear();
      impl->packed_weights = false;
      try {
        c10::InferenceMode guard;
        impl->module.get_method("unpack_cpu")({});
      } catch (const std::exception&) {
        return TorchError("packing the weights for XNNPACK (--cpu_packed_weights) failed halfway", e);
      }
    }
  }
  LimitSimd(options.native_simd);
  if (options.native_decode) {
    // Before freezing, which folds the parameters and tables it reads into constants.
    if (!impl->device.is_cpu() || dtype != at::kFloat) {
      impl->native_error = "the native decode step runs CPU float32 models only";
    } else {
      try {
        c10::InferenceMode guard;
        absl::StatusOr<std::unique_ptr<NativeDecoder>> nd = NativeDecoder::Create(impl->module);
        if (nd.ok()) {
          impl->native = std::move(*nd);
        } else {
          impl->native_error = std::string(nd.status().message());
        }
      } catch (const std::exception& e) {
        impl->native_error = std::string(TorchError("reading the export for the native decode step failed", e).message());
      }
    }
  }
  if (options.freeze) {
    // Not fatal: the module then runs as exported, and says why. XNNPACK's packed products (custom-class
    // objects) are known to be refused, so no copy of the module is made to find that out.
    if (impl->packed_weights) {
      impl->freeze_error =
          "XNNPACK's packed weights (--cpu_packed_weights=true, or auto on a CPU with AVX-512) cannot be frozen";
    } else {
      absl::Status frozen = impl->Freeze();
      if (!frozen.ok()) impl->freeze_error = std::string(frozen.message());
    }
  }
  if (impl->native != nullptr) {
    absl::Status same = impl->CheckNativeDecode();
    if (!same.ok()) {
      impl->native.reset();
      impl->native_error = std::string(same.message());
    }
  }
  impl->native_spans = impl->native != nullptr && options.native_spans;
  if (impl->native != nullptr && impl->shards != nullptr && options.decode_team) {
    impl->team = std::make_unique<DecodeTeam>(impl->shards->threads());
    // The team's buffers touched now for a step of every initial slot plus prompts' spans (4 rows a slot
    // in all), not in the first such steps (~2,000 page faults of a new process's first 32-session run).
    const int64_t slots = impl->capacity;
    impl->native->Reserve(impl->team.get(), 4 * slots, slots);
  }
  return std::unique_ptr<ModelRunner>(new ModelRunner(std::move(impl)));
}

absl::Status ModelRunner::Impl::CheckNativeDecode() {
  // Slots 0 and 1 as scratch: no session holds a slot yet, and a new session's slot is initialised when
  // it is handed out.
  constexpr double kTolerance = 1e-3;  // fp32 rounding differs by ~1e-5; another function by far more
  try {
    c10::InferenceMode guard;
    Reserve(1);
    const at::Tensor both = LongTensor({0, 1}, device);
    module.get_method("init_slots")({both, KvList(), state});
    const int64_t w = meta.window, vocab = native->vocab();
    double worst = 0;
    int64_t worst_at = 0;
    std::vector<float> mine(static_cast<size_t>(vocab));
    float* out = mine.data();
    for (int64_t p = 0; p <= w; ++p) {
      const int64_t token = 4 + (p * 7919) % (vocab - 4);
      at::Tensor theirs = module.get_method("decode_slots")({LongTensor({token}, device), LongTensor({p}, device),
                                                             LongTensor({0}, device), KvList(), state})
                              .toTensor()
                              .contiguous();
      const int64_t one = 1;
      native->Decode(&token, &p, &one, 1, kv, state, &out);
      if (p % w == w - 1) {
        module.get_method("finish_slots")({LongTensor({0}, device), KvList(), state});
        if (native->can_finish()) native->Finish(&one, 1, kv, state);
        else module.get_method("finish_slots")({LongTensor({1}, device), KvList(), state});
      }
      const double d = (theirs[0] - at::from_blob(out, {vocab}, at::kFloat)).abs().max().item<double>();
      if (d > worst) worst = d, worst_at = p;
    }
    double memory = (state[0] - state[1]).abs().max().item<double>();
    for (const at::Tensor& pool : kv) memory = std::max(memory, (pool[0] - pool[1]).abs().max().item<double>());
    module.get_method("init_slots")({both, KvList(), state});
    if (worst > kTolerance || memory > kTolerance) {
      return absl::InternalError(absl::StrCat(
          "the native decode step differs from the export's (log-probabilities by ", worst, " at position ",
          worst_at, ", memory by ", memory, "; tolerance ", kTolerance,
          "): the export is not the layout it implements; the export's own decode step runs"));
    }
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("checking the native decode step against the export's failed", e);
  }
}

absl::Status ModelRunner::Impl::Freeze() {
  // Every method the runner calls after Create (the pack methods ran already).
  std::vector<std::string> keep;
  for (const char* name : {"init_slots", "copy_slots", "score_slots", "decode_slots", "decode_range",
                           "finish_slots", "finish_range", "span_slots", "mixed_slots"}) {
    if (module.find_method(name).has_value()) keep.emplace_back(name);
  }
  // Inlining a call takes the callee's optimised graph, which is itself inlined only while the graph
  // executor optimises (a thread-local switch the runner keeps off; see InitExecutorThread): on for
  // this, so calls nested at any depth are inlined before the submodules' methods are dropped.
  const bool optimize = torch::jit::getGraphExecutorOptimize();
  torch::jit::setGraphExecutorOptimize(true);
  struct Restore {
    bool value;
    ~Restore() { torch::jit::setGraphExecutorOptimize(value); }
  } restore{optimize};
  try {
    c10::InferenceMode guard;
    module = torch::jit::freeze_module(module, keep);  // no lanes: they exist only with XNNPACK packing
  } catch (const std::exception& e) {
    return TorchError("freezing the TorchScript module (--freeze_model) failed", e);
  }
  frozen = true;
  return absl::OkStatus();
}

absl::StatusOr<PackedWeights> ParsePackedWeights(const std::string& value) {
  if (value == "auto") return PackedWeights::kAuto;
  if (value == "true") return PackedWeights::kOn;
  if (value == "false") return PackedWeights::kOff;
  if (value == "transposed") return PackedWeights::kTransposed;
  return absl::InvalidArgumentError(absl::StrCat(
      "--cpu_packed_weights must be auto, true (XNNPACK), transposed (OpenBLAS, weights transposed at "
      "load) or false; got '", value, "'"));
}

absl::StatusOr<PoolGrowth> ParsePoolGrowth(const std::string& value) {
  if (value == "in_place") return PoolGrowth::kInPlace;
  if (value == "copy") return PoolGrowth::kCopy;
  return absl::InvalidArgumentError(absl::StrCat(
      "--pool_growth must be in_place (pools grow in reserved address space, no copy) or copy (new pools "
      "and a copy of the old ones); got '", value, "'"));
}

absl::StatusOr<SimdLevel> ParseNativeSimd(const std::string& value) {
  SimdLevel level = SimdLevel::kAvx512;
  if (ParseSimdLevel(value, &level)) return level;
  return absl::InvalidArgumentError(absl::StrCat(
      "--native_simd must be auto (the best this CPU has: ", SimdLevelName(DetectedSimd()),
      "), avx512, avx2 or portable; got '", value, "'"));
}

SimdLevel ModelRunner::native_simd() const { return ActiveSimd(); }
bool ModelRunner::frozen() const { return impl_->frozen; }
const std::string& ModelRunner::freeze_error() const { return impl_->freeze_error; }
bool ModelRunner::native_decode() const { return impl_->native != nullptr; }
const std::string& ModelRunner::native_decode_error() const { return impl_->native_error; }
bool ModelRunner::decode_team() const { return impl_->team != nullptr; }
std::vector<int> ModelRunner::pinned_cpus() const {
  return impl_->shards != nullptr ? impl_->shards->pinned_cpus() : std::vector<int>{};
}

bool ModelRunner::PackedWeightsPayOff() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512f");
#else
  return true;
#endif
}

void ModelRunner::InitExecutorThread() {
  // No profiling/optimising graph executor: it re-specialises a method on the shapes of its first calls
  // and again when they change (the batch size changes every step), and those runs were 10-15x slower
  // (a one-row state update took ~35 ms instead of ~2 ms). The plain interpreter runs every call alike.
  torch::jit::setGraphExecutorOptimize(false);
  // OpenMP's thread count is per thread: set it again on the thread that runs the model.
  impl_->current_threads = 0;
  impl_->UseThreads(impl_->threads);
}

int32_t ModelRunner::pool_capacity() const { return impl_->capacity; }
bool ModelRunner::pools_in_place() const { return impl_->pool_memory != nullptr; }

absl::StatusOr<std::vector<ScoreBlocksResult>> ModelRunner::ScoreBlocks(
    const std::vector<ScoreBlocksRow>& rows, int top_k) {
  const int64_t b = static_cast<int64_t>(rows.size());
  if (b == 0) return absl::InvalidArgumentError("ScoreBlocks: no rows");
  const int64_t n = static_cast<int64_t>(rows[0].tokens.size());
  const int64_t w = impl_->meta.window;
  if (n == 0 || n % w != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ScoreBlocks: ", n, " tokens is not a multiple of W=", w));
  }
  std::vector<int64_t> flat, starts, slots;
  flat.reserve(b * n);
  int32_t max_slot = 0;
  for (const auto& r : rows) {
    if (static_cast<int64_t>(r.tokens.size()) != n) {
      return absl::InvalidArgumentError("ScoreBlocks: rows of different lengths");
    }
    if (r.start % w != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("ScoreBlocks: start ", r.start, " is not at a block boundary"));
    }
    absl::Status ok = impl_->CheckSlot(r.slot);
    if (!ok.ok()) return ok;
    max_slot = std::max(max_slot, r.slot);
    flat.insert(flat.end(), r.tokens.begin(), r.tokens.end());
    starts.push_back(r.start);
    slots.push_back(r.slot);
  }
  if (absl::Status grown = impl_->Grow(max_slot); !grown.ok()) return grown;
  std::vector<ScoreBlocksResult> results(b);
  auto shard = [&](torch::jit::script::Module& m, int64_t begin, int64_t end) -> absl::Status {
    try {
      c10::InferenceMode guard;
      const int64_t rows = end - begin;
      at::Tensor tokens = at::from_blob(flat.data() + begin * n, {rows, n}, at::kLong).to(impl_->device);
      auto out = m.get_method("score_slots")(
                                   {tokens, LongTensor(Span(starts, begin, end), impl_->device),
                                    LongTensor(Span(slots, begin, end), impl_->device), impl_->KvList(),
                                    impl_->state,
                                    int64_t{top_k}})
                     .toTuple();
      const HostOutputs h = ToHost(*out, /*all_positions=*/true);
      for (int64_t i = 0; i < rows; ++i) {
        CopyRowOutputs(h.target, h.topk_lp, h.topk_id, h.next, i, n, n, top_k, /*all_positions=*/true,
                       &results[static_cast<size_t>(begin + i)]);
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return TorchError("score_slots failed", e);
    }
  };
  absl::Status ok = impl_->ForShards(b, impl_->threads, /*always_pool=*/false, shard);
  if (!ok.ok()) return ok;
  return results;
}

bool ModelRunner::SupportsSpans() const { return impl_->has_spans; }

bool ModelRunner::packed_weights() const { return impl_->packed_weights; }

const std::string& ModelRunner::pack_error() const { return impl_->pack_error; }

bool ModelRunner::auto_unpacked() const { return impl_->auto_unpacked; }
bool ModelRunner::transposed_weights() const { return impl_->transposed_weights; }

}  // namespace brt
