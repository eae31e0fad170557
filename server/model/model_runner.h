// ModelRunner: runs a TorchScript BRT export with LibTorch. The only component that includes torch.
//
// Create() loads brt.pt and its brt_meta.json, checks the export against the tokenizer (sha256),
// moves the module to the device and dtype, sets the intra-op thread count, and caches the initial
// state. Every torch call runs under c10::InferenceMode and every c10::Error / std::exception
// becomes an absl::Status.
//
// Thread safety: NOT thread-safe (see ModelBackend); one executor thread owns it.
#ifndef BRT_SERVER_MODEL_MODEL_RUNNER_H_
#define BRT_SERVER_MODEL_MODEL_RUNNER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/model/backend.h"

namespace brt {

struct ModelRunnerOptions {
  std::string model_path;  // the TorchScript export (brt.pt)
  // sha256 hex of the tokenizer model the server loaded; Create fails with FAILED_PRECONDITION when
  // the export's tokenizer_sha256 differs. Empty skips the check.
  std::string tokenizer_sha256;
  std::string device = "cpu";  // "cpu" or "cuda:N"
  std::string dtype =
      "float32";    // "float32", "bfloat16" or "float16" (memory dtype; logprobs stay fp32)
  int threads = 0;  // intra-op threads; 0 = number of cores
};

class ModelRunner : public ModelBackend {
 public:
  // NOT_FOUND: no such file; INVALID_ARGUMENT: bad device/dtype/metadata; FAILED_PRECONDITION:
  // tokenizer mismatch or device unavailable; INTERNAL: torch errors.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(const ModelRunnerOptions& options);
  ~ModelRunner() override;

  const ModelMetadata& metadata() const override;
  void InitExecutorThread() override;
  absl::StatusOr<MemoryPtr> InitialState() override;
  absl::StatusOr<std::vector<ScoreBlocksResult>> ScoreBlocks(
      const std::vector<ScoreBlocksRow>& rows, int top_k) override;
  absl::StatusOr<std::vector<DecodeResult>> DecodeStep(const std::vector<DecodeRow>& rows) override;
  absl::StatusOr<HostMemory> ExportMemory(const MemoryPtr& memory) override;
  absl::StatusOr<MemoryPtr> ImportMemory(const HostMemory& memory) override;

 private:
  struct Impl;
  explicit ModelRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_MODEL_RUNNER_H_
