#include "tests/cpp/testing/fake_backend.h"

#include <cmath>
#include <cstdlib>

namespace brt::testing {
FakeBackend::FakeBackend(int32_t window, int32_t vocab) {
  meta_.name = "fake";
  meta_.window = window;
  meta_.vocab_size = vocab;
  meta_.bos_id = 1;
  meta_.eos_id = 2;
  meta_.state_bytes = 1234;
}

std::vector<int32_t>& FakeBackend::SlotLocked(int32_t slot) {
  if (slot >= static_cast<int32_t>(slots_.size())) slots_.resize(slot + 1);
  return slots_[slot];
}

absl::Status FakeBackend::InitSlots(const std::vector<int32_t>& slots) {
  absl::MutexLock lock(&mu_);
  for (int32_t s : slots) {
    if (s < 0) return absl::InvalidArgumentError("fake: negative slot");
    SlotLocked(s).clear();
  }
  return absl::OkStatus();
}

absl::Status FakeBackend::CopySlot(int32_t from, int32_t to) {
  absl::MutexLock lock(&mu_);
  std::vector<int32_t> copy = SlotLocked(from);
  SlotLocked(to) = std::move(copy);
  return absl::OkStatus();
}

std::vector<int32_t> FakeBackend::Fed(int32_t slot) {
  absl::MutexLock lock(&mu_);
  return SlotLocked(slot);
}

std::vector<float> FakeBackend::LogprobsAfter(int32_t token) const {
  const int32_t v = meta_.vocab_size;
  std::vector<float> lp(v, static_cast<float>(std::log(0.5 / (v - 1))));
  lp[(token + 1) % v] = static_cast<float>(std::log(0.5));
  return lp;
}

void FakeBackend::SetGated(bool gated) {
  absl::MutexLock lock(&mu_);
  gated_ = gated;
}

void FakeBackend::WaitGate() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](bool* g) { return !*g; }, &gated_));
}

absl::StatusOr<std::vector<ScoreBlocksResult>> FakeBackend::ScoreBlocks(
    const std::vector<ScoreBlocksRow>& rows, int top_k) {
  WaitGate();
  score_calls++;
  int b = static_cast<int>(rows.size());
  if (b > max_score_batch) max_score_batch = b;
  std::vector<ScoreBlocksResult> out;
  for (const auto& row : rows) {
    if (row.tokens.empty() || row.tokens.size() % meta_.window != 0) {
      return absl::InvalidArgumentError("fake: bad block size");
    }
    if (row.start % meta_.window != 0 || static_cast<int64_t>(Fed(row.slot).size()) != row.start) {
      return absl::InvalidArgumentError("fake: not at a block boundary");
    }
    ScoreBlocksResult r;
    const size_t n = row.tokens.size();
    for (size_t i = 0; i + 1 < n; ++i)
      r.target_logprobs.push_back(LogprobsAfter(row.tokens[i])[row.tokens[i + 1]]);
    for (size_t i = 0; i < n; ++i) {
      for (int k = 0; k < top_k; ++k) {
        r.topk_ids.push_back(k == 0 ? (row.tokens[i] + 1) % meta_.vocab_size : k);
        r.topk_logprobs.push_back(LogprobsAfter(row.tokens[i])[r.topk_ids.back()]);
      }
    }
    r.next_logprobs = LogprobsAfter(row.tokens.back());
    {
      absl::MutexLock lock(&mu_);
      std::vector<int32_t>& fed = SlotLocked(row.slot);
      fed.insert(fed.end(), row.tokens.begin(), row.tokens.end());
    }
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<DecodeResult>> FakeBackend::DecodeStep(
    const std::vector<DecodeRow>& rows) {
  WaitGate();
  decode_calls++;
  std::vector<DecodeResult> out;
  for (const auto& row : rows) {
    if (static_cast<int64_t>(Fed(row.slot).size()) != row.position) {
      return absl::InvalidArgumentError("fake: position does not match memory");
    }
    DecodeResult r;
    r.logprobs = LogprobsAfter(row.token);
    {
      absl::MutexLock lock(&mu_);
      SlotLocked(row.slot).push_back(row.token);
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::string TinyDir() { return std::string(BRT_TEST_DATA_DIR) + "/tiny"; }
std::string ShimPath() { return BRT_SPM_SHIM_PATH; }

std::shared_ptr<const Tokenizer> TinyTokenizer() {
  static std::shared_ptr<const Tokenizer> tok = [] {
    auto t = Tokenizer::Create(TinyDir() + "/tokenizer.model", ShimPath());
    if (!t.ok()) {
      fprintf(stderr, "cannot load tiny tokenizer: %s\n", t.status().ToString().c_str());
      std::abort();
    }
    return std::shared_ptr<const Tokenizer>(*std::move(t));
  }();
  return tok;
}

}  // namespace brt::testing
