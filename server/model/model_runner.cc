// The only translation unit that includes LibTorch (each one costs ~30 s to compile).
#include "server/model/model_runner.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace brt {
namespace {

constexpr char kMetaFile[] = "brt_meta.json";

class TorchMemory : public DeviceMemory {
 public:
  TorchMemory(at::Tensor kv, at::Tensor state) : kv(std::move(kv)), state(std::move(state)) {}
  at::Tensor kv;     // (1, L, 2, H, 2W, dh)
  at::Tensor state;  // (1, R, 3, S, D)
};

const TorchMemory& AsTorch(const MemoryPtr& m) { return static_cast<const TorchMemory&>(*m); }

// Splits batched memory back into rows. With one row the outputs are kept as they are; otherwise
// each row is copied so it does not pin the whole batch's storage.
std::vector<MemoryPtr> SplitMemory(const at::Tensor& kv, const at::Tensor& state) {
  int64_t b = kv.size(0);
  std::vector<MemoryPtr> out;
  out.reserve(b);
  if (b == 1) {
    out.push_back(std::make_shared<TorchMemory>(kv, state));
    return out;
  }
  for (int64_t i = 0; i < b; ++i) {
    out.push_back(
        std::make_shared<TorchMemory>(kv.narrow(0, i, 1).clone(), state.narrow(0, i, 1).clone()));
  }
  return out;
}

template <typename Rows>
std::pair<at::Tensor, at::Tensor> CatMemory(const Rows& rows) {
  if (rows.size() == 1) {
    const TorchMemory& m = AsTorch(rows[0].memory);
    return {m.kv, m.state};
  }
  std::vector<at::Tensor> kvs, states;
  kvs.reserve(rows.size());
  states.reserve(rows.size());
  for (const auto& r : rows) {
    const TorchMemory& m = AsTorch(r.memory);
    kvs.push_back(m.kv);
    states.push_back(m.state);
  }
  return {at::cat(kvs, 0), at::cat(states, 0)};
}

const char* DTypeString(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return "unsupported";
  }
}

// Host bytes of one memory tensor (exact: no dtype conversion).
HostTensor ToHost(const at::Tensor& t) {
  at::Tensor c = t.to(at::kCPU).contiguous();
  HostTensor out;
  out.dtype = DTypeString(c.scalar_type());
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  out.data.assign(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  return out;
}

// A tensor like `like` (dtype, shape, device) holding `h`'s bytes; INVALID_ARGUMENT if they differ.
absl::StatusOr<at::Tensor> FromHost(const HostTensor& h, const at::Tensor& like, const char* name) {
  std::vector<int64_t> want(like.sizes().begin(), like.sizes().end());
  const char* want_dtype = DTypeString(like.scalar_type());
  if (h.dtype != want_dtype || h.shape != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session memory '", name, "' is ", h.dtype, " ", c10::str(at::IntArrayRef(h.shape)),
        "; this model needs ", want_dtype, " ",
        c10::str(like.sizes())));
  }
  const size_t bytes = static_cast<size_t>(like.numel()) * like.element_size();
  if (h.data.size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("session memory '", name, "' has ",
                                                   h.data.size(), " bytes; want ", bytes));
  }
  at::Tensor cpu = at::empty(like.sizes(), at::TensorOptions().dtype(like.scalar_type()));
  std::memcpy(cpu.data_ptr(), h.data.data(), bytes);
  return cpu.to(like.device());
}

absl::Status TorchError(const char* what, const std::exception& e) {
  std::string msg = e.what();
  // c10::Error messages carry a long backtrace; keep the first line.
  size_t nl = msg.find('\n');
  if (nl != std::string::npos) msg.resize(nl);
  return absl::InternalError(absl::StrCat(what, ": ", msg));
}

}  // namespace

struct ModelRunner::Impl {
  torch::jit::script::Module module;
  c10::Device device{at::kCPU};
  ModelMetadata meta;
  MemoryPtr initial;
  int threads = 1;
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

  torch::jit::ExtraFilesMap extra{{kMetaFile, ""}};
  try {
    c10::InferenceMode guard;
    impl->module = torch::jit::load(options.model_path, at::kCPU, extra);
    impl->module.eval();
    impl->module.to(impl->device);
    if (dtype != at::kFloat) impl->module.to(dtype);
  } catch (const std::exception& e) {
    return TorchError("loading the TorchScript export failed", e);
  }

  ModelMetadata& meta = impl->meta;
  try {
    auto j = nlohmann::json::parse(extra[kMetaFile]);
    if (j.value("format", 0) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.model_path, ": unsupported export format (want 1)"));
    }
    meta.name = j.value("name", "brt");
    meta.fingerprint = j.value("fingerprint", "");
    meta.tokenizer_sha256 = j.value("tokenizer_sha256", "");
    meta.window = j.at("window").get<int32_t>();
    meta.n_state = j.at("n_state").get<int32_t>();
    meta.n_layers = j.at("n_layers").get<int32_t>();
    meta.n_recurrent = j.at("n_recurrent").get<int32_t>();
    meta.n_heads = j.at("n_heads").get<int32_t>();
    meta.head_dim = j.at("head_dim").get<int32_t>();
    meta.d_model = j.at("d_model").get<int32_t>();
    meta.vocab_size = j.at("vocab_size").get<int32_t>();
    meta.bos_id = j.at("bos_id").get<int32_t>();
    meta.eos_id = j.at("eos_id").get<int32_t>();
    meta.parameters = j.value("parameters", int64_t{0});
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.model_path, ": bad or missing ", kMetaFile, ": ", e.what()));
  }
  if (meta.window <= 0 || meta.vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.model_path, ": window and vocab_size must be > 0"));
  }
  if (!options.tokenizer_sha256.empty() && meta.tokenizer_sha256 != options.tokenizer_sha256) {
    return absl::FailedPreconditionError(
        absl::StrCat("tokenizer mismatch: the export ", options.model_path,
                     " was made with a tokenizer of sha256 ", meta.tokenizer_sha256,
                     " but the loaded tokenizer has sha256 ", options.tokenizer_sha256));
  }
  meta.device = impl->device.str();
  meta.dtype = options.dtype;

  std::unique_ptr<ModelRunner> runner(new ModelRunner(std::move(impl)));
  // Cache the (immutable) initial memory; every new session shares it.
  try {
    c10::InferenceMode guard;
    auto out = runner->impl_->module.get_method("initial_state")({int64_t{1}}).toTuple();
    at::Tensor kv = out->elements()[0].toTensor();
    at::Tensor state = out->elements()[1].toTensor();
    runner->impl_->meta.state_bytes =
        kv.numel() * kv.element_size() + state.numel() * state.element_size();
    runner->impl_->initial = std::make_shared<TorchMemory>(kv, state);
  } catch (const std::exception& e) {
    return TorchError("initial_state failed", e);
  }
  return runner;
}

void ModelRunner::InitExecutorThread() {
  // OpenMP's thread count is per thread: set it again on the thread that runs the model.
  at::set_num_threads(impl_->threads);
}

absl::StatusOr<MemoryPtr> ModelRunner::InitialState() { return impl_->initial; }

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
  std::vector<int64_t> flat;
  flat.reserve(b * n);
  for (const auto& r : rows) {
    if (static_cast<int64_t>(r.tokens.size()) != n) {
      return absl::InvalidArgumentError("ScoreBlocks: rows of different lengths");
    }
    flat.insert(flat.end(), r.tokens.begin(), r.tokens.end());
  }
  try {
    c10::InferenceMode guard;
    at::Tensor tokens = at::from_blob(flat.data(), {b, n}, at::kLong).to(impl_->device);
    auto [kv, state] = CatMemory(rows);
    auto out =
        impl_->module.get_method("score_blocks")({tokens, kv, state, int64_t{top_k}}).toTuple();
    const auto& e = out->elements();
    at::Tensor target = e[0].toTensor().to(at::kCPU, at::kFloat).contiguous();
    at::Tensor topk_lp = e[1].toTensor().to(at::kCPU, at::kFloat).contiguous();
    at::Tensor topk_id = e[2].toTensor().to(at::kCPU, at::kLong).contiguous();
    at::Tensor next = e[3].toTensor().to(at::kCPU, at::kFloat).contiguous();
    std::vector<MemoryPtr> memories = SplitMemory(e[4].toTensor(), e[5].toTensor());
    std::vector<ScoreBlocksResult> results(b);
    const int64_t v = next.size(1);
    for (int64_t i = 0; i < b; ++i) {
      ScoreBlocksResult& r = results[i];
      const float* tp = target.data_ptr<float>() + i * (n - 1);
      r.target_logprobs.assign(tp, tp + (n - 1));
      if (top_k > 0) {
        const float* kp = topk_lp.data_ptr<float>() + i * n * top_k;
        r.topk_logprobs.assign(kp, kp + n * top_k);
        const int64_t* ip = topk_id.data_ptr<int64_t>() + i * n * top_k;
        r.topk_ids.assign(ip, ip + n * top_k);
      }
      const float* np = next.data_ptr<float>() + i * v;
      r.next_logprobs.assign(np, np + v);
      r.memory = std::move(memories[i]);
    }
    return results;
  } catch (const std::exception& e) {
    return TorchError("score_blocks failed", e);
  }
}

absl::StatusOr<std::vector<DecodeResult>> ModelRunner::DecodeStep(
    const std::vector<DecodeRow>& rows) {
  const int64_t b = static_cast<int64_t>(rows.size());
  if (b == 0) return absl::InvalidArgumentError("DecodeStep: no rows");
  std::vector<int64_t> tokens(b), positions(b);
  for (int64_t i = 0; i < b; ++i) {
    tokens[i] = rows[i].token;
    positions[i] = rows[i].position;
  }
  try {
    c10::InferenceMode guard;
    at::Tensor t = at::from_blob(tokens.data(), {b}, at::kLong).to(impl_->device);
    at::Tensor p = at::from_blob(positions.data(), {b}, at::kLong).to(impl_->device);
    auto [kv, state] = CatMemory(rows);
    auto out = impl_->module.get_method("decode_step")({t, p, kv, state}).toTuple();
    const auto& e = out->elements();
    at::Tensor logprobs = e[0].toTensor().to(at::kCPU, at::kFloat).contiguous();
    std::vector<MemoryPtr> memories = SplitMemory(e[1].toTensor(), e[2].toTensor());
    const int64_t v = logprobs.size(1);
    std::vector<DecodeResult> results(b);
    for (int64_t i = 0; i < b; ++i) {
      const float* lp = logprobs.data_ptr<float>() + i * v;
      results[i].logprobs.assign(lp, lp + v);
      results[i].memory = std::move(memories[i]);
    }
    return results;
  } catch (const std::exception& e) {
    return TorchError("decode_step failed", e);
  }
}

absl::StatusOr<HostMemory> ModelRunner::ExportMemory(const MemoryPtr& memory) {
  try {
    c10::InferenceMode guard;
    const TorchMemory& m = AsTorch(memory);
    HostMemory out;
    out.kv = ToHost(m.kv);
    out.state = ToHost(m.state);
    return out;
  } catch (const std::exception& e) {
    return TorchError("exporting session memory failed", e);
  }
}

absl::StatusOr<MemoryPtr> ModelRunner::ImportMemory(const HostMemory& memory) {
  try {
    c10::InferenceMode guard;
    const TorchMemory& like = AsTorch(impl_->initial);
    auto kv = FromHost(memory.kv, like.kv, "kv");
    if (!kv.ok()) return kv.status();
    auto state = FromHost(memory.state, like.state, "state");
    if (!state.ok()) return state.status();
    return MemoryPtr(std::make_shared<TorchMemory>(*std::move(kv), *std::move(state)));
  } catch (const std::exception& e) {
    return TorchError("importing session memory failed", e);
  }
}

}  // namespace brt
