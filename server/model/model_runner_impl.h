// ModelRunner's internals, shared by its translation units (model_runner.cc: loading, block scoring;
// model_runner_rows.cc: the token-row calls; model_runner_slots.cc: a slot's memory and its export and
// import). Not part of the API: include model_runner.h instead. Includes LibTorch.
//
// Thread safety: as ModelRunner (one executor thread; the row shards run on ShardPool's workers).
#ifndef BRT_SERVER_MODEL_MODEL_RUNNER_IMPL_H_
#define BRT_SERVER_MODEL_MODEL_RUNNER_IMPL_H_

#include <torch/script.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/model/model_runner.h"
#include "server/model/native_decoder.h"
#include "server/model/pool_memory.h"
#include "server/model/shard_pool.h"
#include "server/model/tensor_io.h"
#include "server/model/torch_threads.h"

namespace brt {


// Elements of a tensor of this shape.
inline size_t Elements(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

inline const char* DTypeString(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return "unsupported";
  }
}

inline absl::Status TorchError(const char* what, const std::exception& e) {
  std::string msg = e.what();
  // A TorchScript interpreter error starts with a generic line and a TorchScript traceback, and ends with
  // the error itself ("RuntimeError: ..."): keep that line.
  constexpr std::string_view kInterpreter = "The following operation failed in the TorchScript interpreter";
  if (msg.rfind(kInterpreter, 0) == 0) {
    size_t at = msg.rfind("Error: ");
    if (at != std::string::npos) {
      const size_t begin = msg.rfind('\n', at);
      msg.erase(0, begin == std::string::npos ? 0 : begin + 1);
    }
  }
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
inline constexpr double kFinishCost = 5.0;

// Whether v[begin, end) is first, first+1, ...: those rows of a pool are one slice, read in place.
inline bool Consecutive(const std::vector<int64_t>& v, int64_t begin, int64_t end) {
  for (int64_t i = begin + 1; i < end; ++i) {
    if (v[static_cast<size_t>(i)] != v[static_cast<size_t>(i) - 1] + 1) return false;
  }
  return end > begin;
}


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
  // CPU, unless ModelRunnerOptions::pool_growth is kCopy: the address space the pools are views of, so
  // they grow in place (pool_memory.h); null otherwise (pools are allocated, and copied when they grow).
  std::unique_ptr<PoolMemory> pool_memory;
  int32_t max_slots = 0;
  int threads = 1;
  int decode_threads = 1;
  bool jit_optimize = false;
  int current_threads = 0;  // what at::set_num_threads was last given on the executor thread
  bool has_spans = false;   // the export has span_slots
  bool has_mixed = false;   // the export has mixed_slots (decode rows and span rows in one call)
  bool has_ranges = false;  // the export has decode_range and finish_range (read the pools in place)
  bool packed_weights = false;  // pack_cpu() ran: products through XNNPACK
  bool auto_unpacked = false;   // kAuto left a CPU float32 model unpacked (PackedWeightsPayOff)
  bool transposed_weights = false;  // pack_cpu_transposed() ran: OpenBLAS reads weights transposed once
  std::string pack_error;       // why pack_cpu failed (the model then runs unpacked); empty if it did not
  bool frozen = false;          // Freeze() ran: the module's methods run frozen (ModelRunnerOptions::freeze)
  std::unique_ptr<NativeDecoder> native;  // decode steps in C++ (ModelRunnerOptions::native_decode), or null
  std::string native_error;     // why native decode was asked for and is off; empty otherwise
  // With `native` and the shard workers: the team that runs each native decode step on all the workers
  // together (ModelRunnerOptions::decode_team); null otherwise.
  std::unique_ptr<DecodeTeam> team;
  // Without `shards` and with more than one thread: workers for ForEachRow (token draws) alone.
  std::unique_ptr<ShardPool> draw_pool;
  bool native_spans = false;  // prompts' spans through `native` too (ModelRunnerOptions::native_spans)
  std::string freeze_error;     // why Freeze failed (the module then runs as exported); empty if it did not
  // Row shards (CPU): calls with at least shard_min_rows rows, and every decode step, run on these
  // workers of one intra-op thread each. Null when off (one shard, or a GPU).
  std::unique_ptr<ShardPool> shards;
  int shard_min_rows = 2;

  // Replaces `module` with its frozen form, keeping only the methods the runner calls:
  // torch::jit::freeze_module inlines every submodule and function call into them and turns the
  // parameters and the packed/transposed weights into constants, so a call no longer looks attributes
  // up or calls methods through the interpreter. Same operations on the same values: bitwise the same
  // results (model_runner_test). INTERNAL when LibTorch refuses; the module is then left as it was.
  // Not called with XNNPACK's packed products (custom-class objects, which LibTorch refuses to freeze),
  // so there are no lanes to freeze.
  absl::Status Freeze();

  // At load, with `native` set: decodes W+1 tokens (across a block end) with both the export and `native`
  // in scratch slots 0 and 1 and compares the log-probabilities and the memory left; INTERNAL, saying by how
  // much, when they differ beyond fp32 rounding (an export whose layer math is not the one NativeDecoder
  // implements, though its names are). Leaves both slots initialised.
  absl::Status CheckNativeDecode();

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
  // The state update of `done` (ascending slots): in C++ (NativeDecoder) when it can, else the export's, in
  // place when they are consecutive and the export can.
  void Finish(torch::jit::script::Module& m, const std::vector<int64_t>& done, const c10::IValue& kv) const {
    if (done.empty()) return;
    if (native != nullptr && native->can_finish()) {
      native->Finish(done.data(), static_cast<int64_t>(done.size()), this->kv, state);  // the pools (kv is their IValue list)
      return;
    }
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
  // The pools' shapes after their slot dimension: kv[l] for each layer, then state.
  std::vector<std::vector<int64_t>> PoolShapes() const {
    std::vector<std::vector<int64_t>> shapes;
    for (size_t l = 0; l < kv.size(); ++l) shapes.push_back({2, meta.n_heads, ring[l], meta.head_dim});
    shapes.push_back({meta.n_recurrent, 3, meta.n_state, meta.d_model});
    return shapes;
  }
  // Grows every pool to hold `slot` (doubling, capped at max_slots): in place with pool_memory (its views
  // extended; the first slots touched here, later ones by their sessions' first writes), else into new
  // pools, the old rows copied.
  void Reserve(int32_t slot) {
    if (slot < capacity) return;
    int64_t want = std::max<int64_t>(1, capacity);
    while (want <= slot) want *= 2;
    want = std::min<int64_t>(want, max_slots);
    const std::vector<std::vector<int64_t>> shapes = PoolShapes();
    if (pool_memory != nullptr) {
      if (capacity == 0) pool_memory->Touch(want);
      for (size_t l = 0; l < kv.size(); ++l) kv[l] = pool_memory->View(l, want, shapes[l], dtype);
      state = pool_memory->View(kv.size(), want, shapes[kv.size()], dtype);
    } else {
      for (size_t l = 0; l < kv.size(); ++l) {
        at::Tensor grown = NewPool(shapes[l], want);
        if (capacity > 0) grown.narrow(0, 0, capacity).copy_(kv[l]);
        kv[l] = grown;
      }
      at::Tensor grown = NewPool(shapes[kv.size()], want);
      if (capacity > 0) grown.narrow(0, 0, capacity).copy_(state);
      state = grown;
    }
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

}  // namespace brt

#endif  // BRT_SERVER_MODEL_MODEL_RUNNER_IMPL_H_
