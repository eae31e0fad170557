// FakeBackend: a deterministic ModelBackend without torch, for core tests. Its "model" predicts
// next token = (last token + 1) % V with probability 0.5 (the rest spread uniformly), and a slot's
// memory is the list of tokens fed into it. It can be told to block each call until released (to fill
// queues) and counts calls and batch sizes.
#ifndef BRT_TESTS_CPP_TESTING_FAKE_BACKEND_H_
#define BRT_TESTS_CPP_TESTING_FAKE_BACKEND_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "server/model/backend.h"
#include "server/tokenizer/tokenizer.h"

namespace brt::testing {

class FakeBackend : public ModelBackend {
 public:
  FakeBackend(int32_t window, int32_t vocab);
  const ModelMetadata& metadata() const override { return meta_; }
  absl::Status InitSlots(const std::vector<int32_t>& slots) override;
  absl::Status CopySlot(int32_t from, int32_t to) override;
  absl::StatusOr<std::vector<ScoreBlocksResult>> ScoreBlocks(
      const std::vector<ScoreBlocksRow>& rows, int top_k) override;
  absl::StatusOr<std::vector<DecodeResult>> DecodeStep(const std::vector<DecodeRow>& rows) override;

  // The distribution after a token.
  std::vector<float> LogprobsAfter(int32_t token) const;
  // Tokens fed into a slot since it was initialised.
  std::vector<int32_t> Fed(int32_t slot);

  // While gated, every call waits until Release().
  void SetGated(bool gated);
  std::atomic<int> score_calls{0};
  std::atomic<int> decode_calls{0};
  std::atomic<int> max_score_batch{0};

 private:
  void WaitGate();
  ModelMetadata meta_;
  absl::Mutex mu_;
  bool gated_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::vector<int32_t>> slots_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t>& SlotLocked(int32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
};

// Paths to the tiny test export and the shim.
std::string TinyDir();
std::string ShimPath();
// The tiny tokenizer (tests/data/tiny/tokenizer.model), loaded once.
std::shared_ptr<const Tokenizer> TinyTokenizer();

}  // namespace brt::testing

#endif  // BRT_TESTS_CPP_TESTING_FAKE_BACKEND_H_
