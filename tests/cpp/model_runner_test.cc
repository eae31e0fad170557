// ModelRunner against the tiny random export (tests/data/tiny: W=8, vocab 4096, L=2, R=1).
#include "server/model/model_runner.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/cpp/testing/fake_backend.h"
#include "tests/cpp/testing/status_matchers.h"

namespace brt {
namespace {

using ::brt::testing::StatusIs;
using ::brt::testing::TinyDir;

std::unique_ptr<ModelRunner> LoadTiny() {
  ModelRunnerOptions o;
  o.model_path = TinyDir() + "/brt.pt";
  o.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
  o.threads = 1;
  auto r = ModelRunner::Create(o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : nullptr;
}

std::vector<int32_t> RandomTokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(3 + static_cast<int32_t>(rng() % 4000));
  return t;
}

TEST(ModelRunnerTest, LoadsMetadata) {
  auto r = LoadTiny();
  ASSERT_NE(r, nullptr);
  const ModelMetadata& m = r->metadata();
  EXPECT_EQ(m.name, "tiny-random");
  EXPECT_EQ(m.window, 8);
  EXPECT_EQ(m.vocab_size, 4096);
  EXPECT_EQ(m.n_layers, 2);
  EXPECT_EQ(m.n_recurrent, 1);
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_EQ(m.device, "cpu");
  EXPECT_EQ(m.fingerprint.size(), 64u);
  // 4*L*W*D + 3*R*S*D floats.
  EXPECT_EQ(m.state_bytes, (4u * 2 * 8 * 32 + 3u * 1 * 4 * 32) * 4);
}

TEST(ModelRunnerTest, RefusesAMismatchedTokenizer) {
  ModelRunnerOptions o;
  o.model_path = TinyDir() + "/brt.pt";
  o.tokenizer_sha256 = std::string(64, '0');
  EXPECT_THAT(ModelRunner::Create(o),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("tokenizer")));
}

TEST(ModelRunnerTest, BadOptions) {
  ModelRunnerOptions o;
  o.model_path = "/nonexistent/brt.pt";
  EXPECT_THAT(ModelRunner::Create(o), StatusIs(absl::StatusCode::kNotFound));
  o.model_path = TinyDir() + "/brt.pt";
  o.dtype = "int8";
  EXPECT_THAT(ModelRunner::Create(o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.dtype = "float32";
  o.device = "tpu";
  EXPECT_THAT(ModelRunner::Create(o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.model_path = TinyDir() + "/tokenizer.model";  // not TorchScript
  o.device = "cpu";
  EXPECT_THAT(ModelRunner::Create(o), StatusIs(absl::StatusCode::kInternal));
}

TEST(ModelRunnerTest, ScoreBlocksEqualsDecodeStepChain) {
  auto r = LoadTiny();
  ASSERT_NE(r, nullptr);
  const int w = r->metadata().window;
  std::vector<int32_t> tokens = RandomTokens(3 * w, 1);
  tokens[0] = r->metadata().bos_id;
  MemoryPtr initial = *r->InitialState();

  auto blocks = r->ScoreBlocks({ScoreBlocksRow{tokens, initial}}, 2);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  const ScoreBlocksResult& b = (*blocks)[0];
  ASSERT_EQ(b.target_logprobs.size(), tokens.size() - 1);
  ASSERT_EQ(b.topk_ids.size(), tokens.size() * 2);

  MemoryPtr mem = initial;
  std::vector<float> logprobs;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto d = r->DecodeStep({DecodeRow{tokens[i], static_cast<int64_t>(i), mem}});
    ASSERT_TRUE(d.ok()) << d.status();
    logprobs = (*d)[0].logprobs;
    mem = (*d)[0].memory;
    if (i + 1 < tokens.size()) {
      EXPECT_NEAR(logprobs[tokens[i + 1]], b.target_logprobs[i], 1e-5) << "position " << i + 1;
      EXPECT_NEAR(logprobs[b.topk_ids[i * 2]], b.topk_logprobs[i * 2], 1e-5);
    }
  }
  for (size_t v = 0; v < logprobs.size(); v += 97)
    EXPECT_NEAR(logprobs[v], b.next_logprobs[v], 1e-5);
  // The memories agree too: continue both with one more block and compare.
  std::vector<int32_t> more = RandomTokens(w, 2);
  auto c1 = r->ScoreBlocks({ScoreBlocksRow{more, b.memory}}, 0);
  auto c2 = r->ScoreBlocks({ScoreBlocksRow{more, mem}}, 0);
  ASSERT_TRUE(c1.ok() && c2.ok());
  for (size_t i = 0; i < (*c1)[0].target_logprobs.size(); ++i) {
    EXPECT_NEAR((*c1)[0].target_logprobs[i], (*c2)[0].target_logprobs[i], 1e-5);
  }
}

TEST(ModelRunnerTest, BatchedEqualsAlone) {
  auto r = LoadTiny();
  ASSERT_NE(r, nullptr);
  const int w = r->metadata().window;
  MemoryPtr initial = *r->InitialState();
  std::vector<int32_t> a = RandomTokens(2 * w, 3), b = RandomTokens(2 * w, 4);
  auto batched = r->ScoreBlocks({ScoreBlocksRow{a, initial}, ScoreBlocksRow{b, initial}}, 0);
  auto alone_b = r->ScoreBlocks({ScoreBlocksRow{b, initial}}, 0);
  ASSERT_TRUE(batched.ok() && alone_b.ok());
  for (size_t i = 0; i < (*alone_b)[0].target_logprobs.size(); ++i) {
    EXPECT_NEAR((*batched)[1].target_logprobs[i], (*alone_b)[0].target_logprobs[i], 1e-5);
  }
  // Decode rows at different offsets in their blocks, batched.
  auto ma = (*batched)[0].memory;
  auto step1 = r->DecodeStep({DecodeRow{a[0], 2 * w, ma}});
  ASSERT_TRUE(step1.ok());
  auto mixed = r->DecodeStep({DecodeRow{a[1], 2 * w + 1, (*step1)[0].memory},
                              DecodeRow{b[0], 2 * w, (*batched)[1].memory}});
  auto alone = r->DecodeStep({DecodeRow{a[1], 2 * w + 1, (*step1)[0].memory}});
  ASSERT_TRUE(mixed.ok() && alone.ok());
  for (size_t v = 0; v < 4096; v += 101) {
    EXPECT_NEAR((*mixed)[0].logprobs[v], (*alone)[0].logprobs[v], 1e-5);
  }
}

TEST(ModelRunnerTest, BadShapesAreErrorsNotCrashes) {
  auto r = LoadTiny();
  ASSERT_NE(r, nullptr);
  MemoryPtr initial = *r->InitialState();
  EXPECT_THAT(r->ScoreBlocks({ScoreBlocksRow{{1, 2, 3}, initial}}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r->DecodeStep({DecodeRow{99999, 0, initial}}), StatusIs(absl::StatusCode::kInternal));
}

}  // namespace
}  // namespace brt
