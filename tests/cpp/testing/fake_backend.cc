#include "tests/cpp/testing/fake_backend.h"

#include <cmath>
#include <cstdlib>

namespace brt::testing {
namespace {

class FakeMemory : public DeviceMemory {
 public:
  std::vector<int32_t> fed;
};

}  // namespace

FakeBackend::FakeBackend(int32_t window, int32_t vocab) {
  meta_.name = "fake";
  meta_.window = window;
  meta_.vocab_size = vocab;
  meta_.bos_id = 1;
  meta_.eos_id = 2;
  meta_.state_bytes = 1234;
}

absl::StatusOr<MemoryPtr> FakeBackend::InitialState() { return std::make_shared<FakeMemory>(); }

const std::vector<int32_t>& FakeBackend::Fed(const MemoryPtr& m) {
  return static_cast<const FakeMemory&>(*m).fed;
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
    if (Fed(row.memory).size() % meta_.window != 0) {
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
    auto m = std::make_shared<FakeMemory>();
    m->fed = Fed(row.memory);
    m->fed.insert(m->fed.end(), row.tokens.begin(), row.tokens.end());
    r.memory = m;
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
    if (static_cast<int64_t>(Fed(row.memory).size()) != row.position) {
      return absl::InvalidArgumentError("fake: position does not match memory");
    }
    DecodeResult r;
    r.logprobs = LogprobsAfter(row.token);
    auto m = std::make_shared<FakeMemory>();
    m->fed = Fed(row.memory);
    m->fed.push_back(row.token);
    r.memory = m;
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
