// One of the two translation units that include LibTorch's full headers (with tensor_io.cc; each costs
// ~30 s to compile).
#include "server/model/model_runner.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/export_metadata.h"
#include "server/model/shard_pool.h"
#include "server/model/tensor_io.h"
#include "server/model/torch_threads.h"

namespace brt {
namespace {


const char* DTypeString(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return "unsupported";
  }
}

absl::Status TorchError(const char* what, const std::exception& e) {
  std::string msg = e.what();
  // c10::Error messages carry a long backtrace; keep the first line.
  size_t nl = msg.find('\n');
  if (nl != std::string::npos) msg.resize(nl);
  return absl::InternalError(absl::StrCat(what, ": ", msg));
}

// A row's state update (finish_slots) in units of one token's decode work, for balancing shards: ~67
// MFLOP a session against ~10 MFLOP a token for the shipped model. Measured per shard call since decode
// steps read the pools in place (decode_range): ~0.7 ms against ~0.15 ms a row on the first dev VM, and
// 2.2-2.5 ms against ~0.45 ms on a slower one (one to seven updates in a 32-row step: no batching gain),
// so ~5x on both (it was 3x before decode_range).
constexpr double kFinishCost = 5.0;

// Whether v[begin, end) is first, first+1, ...: those rows of a pool are one slice, read in place.
bool Consecutive(const std::vector<int64_t>& v, int64_t begin, int64_t end) {
  for (int64_t i = begin + 1; i < end; ++i) {
    if (v[static_cast<size_t>(i)] != v[static_cast<size_t>(i) - 1] + 1) return false;
  }
  return end > begin;
}

}  // namespace

struct ModelRunner::Impl {
  torch::jit::script::Module module;
  // With packed weights and row shards: shard i runs on lanes[i], a copy of `module` with its own packed
  // products (XNNPACK operators are set up per call and must not be shared by two threads at once);
  // lanes[0] is `module`. Empty otherwise: every shard uses `module`.
  std::vector<torch::jit::script::Module> lanes;
  c10::Device device{at::kCPU};
  at::ScalarType dtype = at::kFloat;
  ModelMetadata meta;
  std::vector<int64_t> ring;     // C_l: ring slots of layer l (W or 2W)
  std::vector<at::Tensor> kv;    // per layer (P, 2, H, C_l, dh)
  at::Tensor state;              // (P, R, 3, S, D)
  int32_t capacity = 0;          // P
  int32_t max_slots = 0;
  int threads = 1;
  int decode_threads = 1;
  bool jit_optimize = false;
  int current_threads = 0;  // what at::set_num_threads was last given on the executor thread
  bool has_spans = false;   // the export has span_slots
  bool has_ranges = false;  // the export has decode_range and finish_range (read the pools in place)
  bool packed_weights = false;  // pack_cpu() ran: products through XNNPACK
  bool auto_unpacked = false;   // kAuto left a CPU float32 model unpacked (PackedWeightsPayOff)
  std::string pack_error;       // why pack_cpu failed (the model then runs unpacked); empty if it did not
  // Row shards (CPU): calls with at least shard_min_rows rows, and every decode step, run on these
  // workers of one intra-op thread each. Null when off (one shard, or a GPU).
  std::unique_ptr<ShardPool> shards;
  int shard_min_rows = 2;

  // Runs fn(module, begin, end) over [0, rows): in shards on the workers when the pool is on and the call
  // has enough rows (or always_pool), else on the calling thread with `threads` intra-op threads. Shards
  // are contiguous ranges of even summed `cost` (a row's relative work; empty: 1 each). Each shard's
  // status is kept; the first failure is returned.
  absl::Status ForShards(int64_t rows, int threads_here, bool always_pool,
                         const std::function<absl::Status(torch::jit::script::Module&, int64_t, int64_t)>& fn,
                         std::vector<double> cost = {}) {
    if (shards == nullptr || (rows < shard_min_rows && !always_pool)) {
      UseThreads(threads_here);
      return fn(module, 0, rows);
    }
    const int64_t k = rows < shard_min_rows ? 1 : std::min<int64_t>(shards->threads(), rows);
    std::vector<absl::Status> status(static_cast<size_t>(k));
    std::vector<std::function<void()>> jobs;
    if (cost.empty()) cost.assign(static_cast<size_t>(rows), 1.0);
    const std::vector<int64_t> bounds = ShardBounds(cost, k);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t begin = bounds[static_cast<size_t>(i)], end = bounds[static_cast<size_t>(i) + 1];
      torch::jit::script::Module& m = i < static_cast<int64_t>(lanes.size()) ? lanes[static_cast<size_t>(i)] : module;
      jobs.push_back([&fn, &status, &m, i, begin, end] { status[static_cast<size_t>(i)] = fn(m, begin, end); });
    }
    shards->Run(jobs);
    for (auto& st : status) {
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }

  // Switches the executor thread's intra-op thread count (OpenMP keeps it per thread; cheap).
  void UseThreads(int n) {
    if (n != current_threads) {
      SetIntraOpThreads(n);
      // With packed weights the matrix products run on XNNPACK's pool of n threads (LibTorch's
      // pthreadpool, which at::set_num_threads sizes). ATen's OpenMP threads are kept to one beside it:
      // both kinds spin while they wait, and on 2 cores a 1-session Score ran 20x slower with both at 2.
      if (packed_weights) SetOpenMpThreads(1);
      current_threads = n;
    }
  }

  c10::IValue KvList() const {
    c10::List<at::Tensor> list;
    for (const auto& t : kv) list.push_back(t);
    return list;
  }
  // The state update of `done` (ascending slots): in place when they are consecutive and the export can.
  void Finish(torch::jit::script::Module& m, const std::vector<int64_t>& done, const c10::IValue& kv) const {
    if (done.empty()) return;
    if (has_ranges && Consecutive(done, 0, static_cast<int64_t>(done.size()))) {
      m.get_method("finish_range")({done.front(), static_cast<int64_t>(done.size()), kv, state});
    } else {
      m.get_method("finish_slots")({LongTensor(done, device), kv, state});
    }
  }
  at::Tensor NewPool(std::vector<int64_t> dims, int64_t p) const {
    dims.insert(dims.begin(), p);
    return at::zeros(dims, at::TensorOptions().dtype(dtype).device(device));
  }
  // Grows every pool to hold `slot` (doubling, capped at max_slots). The old rows are copied.
  void Reserve(int32_t slot) {
    if (slot < capacity) return;
    int64_t want = std::max<int64_t>(1, capacity);
    while (want <= slot) want *= 2;
    want = std::min<int64_t>(want, max_slots);
    const auto& m = meta;
    for (size_t l = 0; l < kv.size(); ++l) {
      at::Tensor grown = NewPool({2, m.n_heads, ring[l], m.head_dim}, want);
      if (capacity > 0) grown.narrow(0, 0, capacity).copy_(kv[l]);
      kv[l] = grown;
    }
    at::Tensor grown = NewPool({m.n_recurrent, 3, m.n_state, m.d_model}, want);
    if (capacity > 0) grown.narrow(0, 0, capacity).copy_(state);
    state = grown;
    capacity = static_cast<int32_t>(want);
  }
  // Reserve, as a status (for calls that then run their shards outside one try block).
  absl::Status Grow(int32_t slot) {
    try {
      c10::InferenceMode guard;
      Reserve(slot);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return TorchError("growing the session memory pools failed", e);
    }
  }
  absl::Status CheckSlot(int32_t slot) const {
    if (slot < 0 || slot >= max_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", slot, " is outside [0, ", max_slots, ")"));
    }
    return absl::OkStatus();
  }
};

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
  int threads = options.threads > 0
                    ? options.threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
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
    impl->has_ranges = impl->module.find_method("decode_range").has_value() &&
                       impl->module.find_method("finish_range").has_value();
    impl->module.to(impl->device);
    if (dtype != at::kFloat) impl->module.to(dtype);
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
  try {
    c10::InferenceMode guard;
    impl->Reserve(std::max(0, std::min(options.initial_slots, options.max_slots) - 1));
  } catch (const std::exception& e) {
    return TorchError("allocating the session memory pools failed", e);
  }
  const int shards = options.shards > 0 ? options.shards : threads;
  if (shards > 1 && !impl->device.is_cuda()) {
    impl->shard_min_rows = std::max(1, options.shard_min_rows);
    impl->shards = std::make_unique<ShardPool>(shards, [] {
      SetIntraOpThreads(1);
      // XNNPACK (packed weights) runs on the calling thread, not on LibTorch's one process-wide
      // pthreadpool, which serialises its callers: two shards would otherwise take turns.
      RunPoolOpsOnThisThread();
      torch::jit::setGraphExecutorOptimize(false);  // thread-local, as on the executor
    });
  }
  const bool pack = options.cpu_packed_weights == PackedWeights::kOn ||
                    (options.cpu_packed_weights == PackedWeights::kAuto && PackedWeightsPayOff());
  impl->auto_unpacked = !pack && options.cpu_packed_weights == PackedWeights::kAuto &&
                        impl->device.is_cpu() && dtype == at::kFloat;
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
  return std::unique_ptr<ModelRunner>(new ModelRunner(std::move(impl)));
}

absl::StatusOr<PackedWeights> ParsePackedWeights(const std::string& value) {
  if (value == "auto") return PackedWeights::kAuto;
  if (value == "true") return PackedWeights::kOn;
  if (value == "false") return PackedWeights::kOff;
  return absl::InvalidArgumentError(absl::StrCat("--cpu_packed_weights must be auto, true or false; got '",
                                                 value, "'"));
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

absl::Status ModelRunner::InitSlots(const std::vector<int32_t>& slots) {
  if (slots.empty()) return absl::OkStatus();
  std::vector<int64_t> idx;
  for (int32_t s : slots) {
    absl::Status ok = impl_->CheckSlot(s);
    if (!ok.ok()) return ok;
    idx.push_back(s);
  }
  try {
    c10::InferenceMode guard;
    impl_->Reserve(*std::max_element(slots.begin(), slots.end()));
    impl_->module.get_method("init_slots")(
        {LongTensor(idx, impl_->device), impl_->KvList(), impl_->state});
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("init_slots failed", e);
  }
}

absl::Status ModelRunner::CopySlot(int32_t from, int32_t to) {
  absl::Status ok = impl_->CheckSlot(from);
  if (ok.ok()) ok = impl_->CheckSlot(to);
  if (!ok.ok()) return ok;
  try {
    c10::InferenceMode guard;
    impl_->Reserve(std::max(from, to));
    impl_->module.get_method("copy_slots")({LongTensor({from}, impl_->device),
                                            LongTensor({to}, impl_->device), impl_->KvList(),
                                            impl_->state});
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("copy_slots failed", e);
  }
}

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

absl::StatusOr<std::vector<DecodeResult>> ModelRunner::DecodeStep(
    const std::vector<DecodeRow>& rows) {
  const int64_t b = static_cast<int64_t>(rows.size());
  if (b == 0) return absl::InvalidArgumentError("DecodeStep: no rows");
  const int64_t w = impl_->meta.window;
  // Rows in slot order (order[j] is the caller's row at place j): a shard's rows are then often
  // consecutive slots (the slot allocator hands out the lowest free one), which decode_range reads in
  // place instead of gathering them.
  std::vector<int64_t> order(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) order[static_cast<size_t>(i)] = i;
  std::stable_sort(order.begin(), order.end(), [&rows](int64_t x, int64_t y) {
    return rows[static_cast<size_t>(x)].slot < rows[static_cast<size_t>(y)].slot;
  });
  std::vector<int64_t> tokens(b), positions(b), slots(b);
  int32_t max_slot = 0;
  for (int64_t j = 0; j < b; ++j) {
    const DecodeRow& r = rows[static_cast<size_t>(order[static_cast<size_t>(j)])];
    absl::Status ok = impl_->CheckSlot(r.slot);
    if (!ok.ok()) return ok;
    max_slot = std::max(max_slot, r.slot);
    tokens[j] = r.token;
    positions[j] = r.position;
    slots[j] = r.slot;
  }
  if (absl::Status grown = impl_->Grow(max_slot); !grown.ok()) return grown;
  // The rows that complete a block, known on the host (no device sync): they also run the state update,
  // and weigh 1 + kFinishCost in the shard split.
  std::vector<bool> completes(static_cast<size_t>(b));
  std::vector<double> cost(static_cast<size_t>(b), 1.0);
  for (int64_t i = 0; i < b; ++i) {
    completes[static_cast<size_t>(i)] = positions[i] % w == w - 1;
    if (completes[static_cast<size_t>(i)]) cost[static_cast<size_t>(i)] += kFinishCost;
  }
  std::vector<DecodeResult> results(b);
  auto shard = [&](torch::jit::script::Module& m, int64_t begin, int64_t end) -> absl::Status {
    try {
      c10::InferenceMode guard;
      std::vector<int64_t> done;
      for (int64_t i = begin; i < end; ++i) {
        if (completes[static_cast<size_t>(i)]) done.push_back(slots[i]);
      }
      c10::IValue kv = impl_->KvList();
      at::Tensor toks = LongTensor(Span(tokens, begin, end), impl_->device);
      at::Tensor pos = LongTensor(Span(positions, begin, end), impl_->device);
      at::Tensor out =
          impl_->has_ranges && Consecutive(slots, begin, end)
              ? m.get_method("decode_range")({toks, pos, slots[begin], kv, impl_->state}).toTensor()
              : m.get_method("decode_slots")(
                     {toks, pos, LongTensor(Span(slots, begin, end), impl_->device), kv, impl_->state})
                    .toTensor();
      impl_->Finish(m, done, kv);
      at::Tensor logprobs = out.to(at::kCPU, at::kFloat).contiguous();
      const int64_t v = logprobs.size(1);
      for (int64_t i = 0; i < end - begin; ++i) {
        const float* lp = logprobs.data_ptr<float>() + i * v;
        results[static_cast<size_t>(order[static_cast<size_t>(begin + i)])].logprobs.assign(lp, lp + v);
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return TorchError("decode_slots failed", e);
    }
  };
  // Every decode step runs on the shard workers when they are on (one row too): one intra-op thread
  // decodes faster than two here, and the executor's own thread count then never changes.
  absl::Status ok = impl_->ForShards(b, impl_->decode_threads, /*always_pool=*/true, shard, std::move(cost));
  if (!ok.ok()) return ok;
  return results;
}

bool ModelRunner::SupportsSpans() const { return impl_->has_spans; }

bool ModelRunner::packed_weights() const { return impl_->packed_weights; }

const std::string& ModelRunner::pack_error() const { return impl_->pack_error; }

bool ModelRunner::auto_unpacked() const { return impl_->auto_unpacked; }

absl::StatusOr<std::vector<SpanResult>> ModelRunner::FeedSpans(const std::vector<SpanRow>& rows,
                                                               int top_k, bool all_positions) {
  const int64_t b = static_cast<int64_t>(rows.size());
  if (b == 0) return absl::InvalidArgumentError("FeedSpans: no rows");
  if (!impl_->has_spans) return absl::UnimplementedError("this export has no span_slots; re-export it");
  const int64_t w = impl_->meta.window;
  int64_t n = 0;
  int32_t max_slot = 0;
  for (const auto& r : rows) {
    const int64_t len = static_cast<int64_t>(r.tokens.size());
    if (len == 0 || r.start < 0 || r.start % w + len > w) {
      return absl::InvalidArgumentError(absl::StrCat("FeedSpans: ", len, " tokens at position ", r.start,
                                                     " do not fit in one block of W=", w));
    }
    absl::Status ok = impl_->CheckSlot(r.slot);
    if (!ok.ok()) return ok;
    max_slot = std::max(max_slot, r.slot);
    n = std::max(n, len);
  }
  // Padded to the longest span; the padding (token 0) is neither attended to nor written.
  std::vector<int64_t> flat(static_cast<size_t>(b * n), 0), lengths(b), starts(b), slots(b);
  for (int64_t i = 0; i < b; ++i) {
    const SpanRow& r = rows[static_cast<size_t>(i)];
    std::copy(r.tokens.begin(), r.tokens.end(), flat.begin() + i * n);
    lengths[i] = static_cast<int64_t>(r.tokens.size());
    starts[i] = r.start;
    slots[i] = r.slot;
  }
  if (absl::Status grown = impl_->Grow(max_slot); !grown.ok()) return grown;
  // The rows whose span completes their block, known on the host: they also run the state update. A row
  // costs its padded length in the shard split, plus kFinishCost for the update.
  std::vector<bool> completes(static_cast<size_t>(b));
  std::vector<double> cost(static_cast<size_t>(b), static_cast<double>(n));
  for (int64_t i = 0; i < b; ++i) {
    completes[static_cast<size_t>(i)] = (starts[i] % w) + lengths[i] == w;
    if (completes[static_cast<size_t>(i)]) cost[static_cast<size_t>(i)] += kFinishCost;
  }
  std::vector<SpanResult> results(b);
  auto shard = [&](torch::jit::script::Module& m, int64_t begin, int64_t end) -> absl::Status {
    try {
      c10::InferenceMode guard;
      const int64_t rows_here = end - begin;
      std::vector<int64_t> done;
      for (int64_t i = begin; i < end; ++i) {
        if (completes[static_cast<size_t>(i)]) done.push_back(slots[i]);
      }
      c10::IValue kv = impl_->KvList();
      at::Tensor tokens = at::from_blob(flat.data() + begin * n, {rows_here, n}, at::kLong).to(impl_->device);
      auto out = m.get_method("span_slots")(
                                   {tokens, LongTensor(Span(lengths, begin, end), impl_->device),
                                    LongTensor(Span(starts, begin, end), impl_->device),
                                    LongTensor(Span(slots, begin, end), impl_->device), kv, impl_->state,
                                    int64_t{top_k}, all_positions})
                     .toTuple();
      std::sort(done.begin(), done.end());
      impl_->Finish(m, done, kv);
      const HostOutputs h = ToHost(*out, all_positions);
      for (int64_t i = 0; i < rows_here; ++i) {
        CopyRowOutputs(h.target, h.topk_lp, h.topk_id, h.next, i, n, lengths[begin + i], top_k, all_positions,
                       &results[static_cast<size_t>(begin + i)]);
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return TorchError("span_slots failed", e);
    }
  };
  absl::Status ok = impl_->ForShards(b, impl_->threads, /*always_pool=*/false, shard, std::move(cost));
  if (!ok.ok()) return ok;
  return results;
}

absl::StatusOr<HostMemory> ModelRunner::ExportSlot(int32_t slot) {
  HostMemory out;
  absl::Status ok = ExportSlotInto(slot, &out);
  if (!ok.ok()) return ok;
  return out;
}

absl::Status ModelRunner::ExportSlotInto(int32_t slot, HostMemory* out) {
  absl::Status ok = impl_->CheckSlot(slot);
  if (!ok.ok()) return ok;
  if (slot >= impl_->capacity) return absl::InvalidArgumentError(absl::StrCat("slot ", slot, " was never initialised"));
  try {
    c10::InferenceMode guard;
    const ModelMetadata& m = impl_->meta;
    const int64_t w = m.window;
    // Straight into the host buffers, reusing their capacity when `out` holds a recycled checkpoint's
    // (on this project's VM a fresh page's first touch costs microseconds: a 1.2 MB export took 3.4 ms
    // into new memory and ~0.15 ms into reused memory).
    const auto opts = at::TensorOptions().dtype(impl_->dtype);
    auto host = [&](std::vector<int64_t> shape, HostTensor* h, bool zero) {
      h->dtype = DTypeString(impl_->dtype);
      h->shape = std::move(shape);
      int64_t n = 1;
      for (int64_t d : h->shape) n *= d;
      const size_t bytes = static_cast<size_t>(n) * c10::elementSize(impl_->dtype);
      if (zero) {
        h->data.assign(bytes, '\0');
      } else {
        h->data.resize(bytes);
      }
      return at::from_blob(h->data.data(), h->shape, opts);
    };
    // A W-slot ring fills half of its layer's 2W slots; the other half stays zero.
    at::Tensor kv = host({1, m.n_layers, 2, m.n_heads, 2 * w, m.head_dim}, &out->kv, /*zero=*/true);
    for (int64_t l = 0; l < m.n_layers; ++l) {
      kv[0][l].narrow(2, 0, impl_->ring[l]).copy_(impl_->kv[l][slot]);
    }
    host({1, m.n_recurrent, 3, m.n_state, m.d_model}, &out->state, /*zero=*/false)
        .copy_(impl_->state.narrow(0, slot, 1));
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("exporting session memory failed", e);
  }
}

absl::Status ModelRunner::ImportSlot(int32_t slot, const HostMemory& memory) {
  absl::Status ok = impl_->CheckSlot(slot);
  if (!ok.ok()) return ok;
  const ModelMetadata& m = impl_->meta;
  const int64_t w = m.window;
  const char* dtype = DTypeString(impl_->dtype);
  auto check = [&](const HostTensor& h, std::vector<int64_t> want, const char* name) -> absl::Status {
    if (h.dtype != dtype || h.shape != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "session memory '", name, "' is ", h.dtype, " ", c10::str(at::IntArrayRef(h.shape)),
          "; this model needs ", dtype, " ", c10::str(at::IntArrayRef(want))));
    }
    int64_t n = 1;
    for (int64_t d : want) n *= d;
    if (h.data.size() != static_cast<size_t>(n) * c10::elementSize(impl_->dtype)) {
      return absl::InvalidArgumentError(absl::StrCat("session memory '", name, "' has ",
                                                     h.data.size(), " bytes for its shape"));
    }
    return absl::OkStatus();
  };
  ok = check(memory.kv, {1, m.n_layers, 2, m.n_heads, 2 * w, m.head_dim}, "kv");
  if (ok.ok()) ok = check(memory.state, {1, m.n_recurrent, 3, m.n_state, m.d_model}, "state");
  if (!ok.ok()) return ok;
  try {
    c10::InferenceMode guard;
    impl_->Reserve(slot);
    auto opts = at::TensorOptions().dtype(impl_->dtype);
    at::Tensor kv = at::from_blob(const_cast<char*>(memory.kv.data.data()), memory.kv.shape, opts);
    at::Tensor state =
        at::from_blob(const_cast<char*>(memory.state.data.data()), memory.state.shape, opts);
    for (int64_t l = 0; l < m.n_layers; ++l) {
      impl_->kv[l][slot].copy_(kv[0][l].narrow(2, 0, impl_->ring[l]));
    }
    impl_->state.narrow(0, slot, 1).copy_(state);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("importing session memory failed", e);
  }
}

}  // namespace brt
