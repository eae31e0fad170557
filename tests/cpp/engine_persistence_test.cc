// Session persistence in the core, with the real ModelRunner and the tiny export (no gRPC, no store
// process): memory export/import, SaveSession/RestoreSession/ForkSession, refusals, Drain. The end-to-end
// tests across processes, stores and signals are in tests/integration/test_persistence.py.
#include <gtest/gtest.h>

#include "server/core/engine.h"
#include "server/core/sampling_codec.h"
#include "server/model/model_runner.h"
#include "tests/cpp/testing/fake_backend.h"
#include "tests/cpp/testing/sinks.h"
#include "tests/cpp/testing/status_matchers.h"

namespace brt {
namespace {

using ::brt::testing::CollectingGenerateSink;
using ::brt::testing::CollectingScoreSink;
using ::brt::testing::StatusIs;

constexpr char kFirst[] = "In the beginning God created the heaven and the earth.\n";
constexpr char kSecond[] = "And the earth was without form, and void; and darkness was upon the deep.\n";

std::unique_ptr<ModelRunner> LoadTiny() {
  ModelRunnerOptions o;
  o.model_path = testing::TinyDir() + "/brt.pt";
  o.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
  o.threads = 1;
  return *ModelRunner::Create(o);
}

// Slot export/import exactness is tested in model_runner_test.cc (ExportImportRoundTripsExactly).

TEST(SamplingCodecTest, RoundTripsAndRefusesMalformed) {
  SamplingOverrides s;
  s.temperature = 0.7f;
  s.repetition_window = 9;
  s.seed = 123456789012345ull;
  s.stop = {"\n\n", "END"};
  std::string bytes = EncodeSamplingOverrides(s);
  auto back = DecodeSamplingOverrides(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->temperature, s.temperature);
  EXPECT_FALSE(back->top_k.has_value());
  EXPECT_EQ(back->repetition_window, s.repetition_window);
  EXPECT_EQ(back->seed, s.seed);
  EXPECT_EQ(back->stop, s.stop);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THAT(DecodeSamplingOverrides(bytes.substr(0, n)),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(DecodeSamplingOverrides(bytes + "x"), StatusIs(absl::StatusCode::kInvalidArgument));
}

class EnginePersistenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = Engine::Create(EngineOptions{}, LoadTiny(), testing::TinyTokenizer());
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = *std::move(e);
  }
  std::vector<float> Score(const std::string& id, const std::string& text) {
    CollectingScoreSink sink;
    auto call = engine_->StartScore(id, ScoreOptions{}, &sink);
    EXPECT_TRUE(call.ok()) << call.status();
    if (!call.ok()) return {};
    EXPECT_TRUE((*call)->Append(text).ok());
    EXPECT_TRUE((*call)->CloseInput().ok());
    EXPECT_TRUE(sink.Wait().ok());
    std::vector<float> out;
    for (const auto& t : sink.tokens()) out.push_back(t.nll);
    return out;
  }
  std::unique_ptr<Engine> engine_;
};

TEST_F(EnginePersistenceTest, SavedBytesRestoreToAnExactContinuation) {
  SamplingOverrides defaults;
  defaults.temperature = 0.5f;
  const std::string ref = engine_->CreateSession("ref", {})->id;
  Score(ref, kFirst);
  const std::vector<float> want = Score(ref, kSecond);

  const std::string id = engine_->CreateSession("book", defaults)->id;
  Score(id, kFirst);
  // No store: to_store is refused, bytes are fine.
  EXPECT_THAT(engine_->SaveSession(id, true, false), StatusIs(absl::StatusCode::kFailedPrecondition));
  auto saved = engine_->SaveSession(id, false, true);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->bytes.size(), saved->size_bytes);
  EXPECT_TRUE(saved->key.empty());

  EXPECT_THAT(engine_->RestoreSession(saved->bytes, false),
              StatusIs(absl::StatusCode::kAlreadyExists));
  auto copy = engine_->RestoreSession(saved->bytes, true);
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_NE(copy->id, id);
  EXPECT_EQ(copy->label, "book");
  EXPECT_EQ(copy->default_sampling.temperature, 0.5f);
  EXPECT_EQ(copy->position, engine_->GetSession(id)->position);
  EXPECT_EQ(Score(copy->id, kSecond), want);  // bitwise

  BRT_ASSERT_OK(engine_->DeleteSession(id));
  auto same = engine_->RestoreSession(saved->bytes, false);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->id, id);
  EXPECT_EQ(Score(id, kSecond), want);

  std::string flipped = saved->bytes;
  flipped[flipped.size() / 2] ^= 4;
  EXPECT_THAT(engine_->RestoreSession(flipped, true), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(engine_->RestoreSession(saved->bytes.substr(0, 100), true),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(EnginePersistenceTest, ForkContinuesLikeItsParentIndependently) {
  const std::string parent = engine_->CreateSession("p", {})->id;
  Score(parent, kFirst);
  auto fork = engine_->ForkSession(parent);
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_NE(fork->id, parent);
  const std::vector<float> from_fork = Score(fork->id, kSecond);
  EXPECT_EQ(engine_->GetSession(parent)->position + from_fork.size(), engine_->GetSession(fork->id)->position);
  EXPECT_EQ(Score(parent, kSecond), from_fork);
  EXPECT_THAT(engine_->ForkSession("s_00000000000000000000000000000000"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(EnginePersistenceTest, BusySessionsAreNotSavedAndDrainEndsCalls) {
  const std::string id = engine_->CreateSession("", {})->id;
  CollectingGenerateSink sink;
  GenerateParams params;
  params.max_tokens = 4096;
  auto call = engine_->StartGenerate(id, params, &sink);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_THAT(engine_->SaveSession(id, false, true), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(engine_->ForkSession(id), StatusIs(absl::StatusCode::kFailedPrecondition));
  engine_->Drain();
  auto summary = sink.Wait();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->reason, FinishReason::kCancelled);
  CollectingScoreSink score_sink;
  EXPECT_THAT(engine_->StartScore(id, ScoreOptions{}, &score_sink),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(engine_->CreateSession("", {}), StatusIs(absl::StatusCode::kUnavailable));
  // Idle now, at a token boundary: it saves.
  EXPECT_TRUE(engine_->SaveSession(id, false, true).ok());
}

}  // namespace
}  // namespace brt
