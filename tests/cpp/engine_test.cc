// Engine (sessions, scheduler, executor) against FakeBackend: no torch, no gRPC.
#include "server/core/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>
#include <thread>

#include "absl/synchronization/notification.h"

#include "server/core/session_id.h"
#include "server/persistence/snapshot_store.h"
#include "tests/cpp/testing/fake_backend.h"
#include "tests/cpp/testing/sinks.h"
#include "tests/cpp/testing/status_matchers.h"

namespace brt {
namespace {

using ::brt::testing::CollectingGenerateSink;
using ::brt::testing::CollectingScoreSink;
using ::brt::testing::FakeBackend;
using ::brt::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kW = 8;
constexpr int kVocab = 4096;

const char kText[] =
    "In the beginning God created the heaven and the earth. And the earth was without form, and "
    "void;\n"
    "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the "
    "waters.\nAnd God said, Let there be light: and there was light.";

class EngineTest : public ::testing::Test {
 protected:
  void Start(EngineOptions options = {}) {
    auto backend = std::make_unique<FakeBackend>(kW, kVocab);
    fake_ = backend.get();
    auto engine = Engine::Create(std::move(options), std::move(backend), testing::TinyTokenizer());
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }
  void SetUp() override { Start(); }

  std::string NewSession() {
    auto s = engine_->CreateSession("test", {});
    EXPECT_TRUE(s.ok());
    return s->id;
  }

  // Scores text in chunks of `chunk` bytes and waits for the result.
  absl::StatusOr<ScoreSummaryResult> Score(const std::string& id, const std::string& text,
                                           CollectingScoreSink* sink, size_t chunk = 13) {
    auto call = engine_->StartScore(id, ScoreOptions{}, sink);
    if (!call.ok()) return call.status();
    for (size_t pos = 0; pos < text.size(); pos += chunk) {
      auto more = (*call)->Append(std::string_view(text).substr(pos, chunk));
      if (!more.ok()) return more.status();
    }
    absl::Status closed = (*call)->CloseInput();
    if (!closed.ok()) return closed;
    return sink->Wait();
  }

  FakeBackend* fake_ = nullptr;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, SessionLifecycle) {
  auto a = engine_->CreateSession("first", {});
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(LooksLikeSessionId(a->id));
  EXPECT_EQ(a->label, "first");
  EXPECT_EQ(a->tokens_consumed, 0u);
  EXPECT_EQ(a->position, 1u);
  EXPECT_EQ(a->block_offset, 1u);
  EXPECT_EQ(a->state_bytes, 1234u);
  auto b = engine_->CreateSession("second", {});
  ASSERT_TRUE(b.ok());
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(engine_->ListSessions().size(), 2u);
  BRT_EXPECT_OK(engine_->GetSession(a->id));
  BRT_EXPECT_OK(engine_->DeleteSession(a->id));
  EXPECT_THAT(engine_->GetSession(a->id), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(engine_->DeleteSession(a->id), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(engine_->GetSession(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(engine_->ListSessions().size(), 1u);
}

TEST_F(EngineTest, SessionIdsAreRandomAndUnique) {
  std::set<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.insert(NewSessionId());
  EXPECT_EQ(ids.size(), 200u);
}

TEST_F(EngineTest, RejectsSessionsBeyondTheLimit) {
  EngineOptions o;
  o.max_sessions = 2;
  Start(o);
  NewSession();
  NewSession();
  EXPECT_THAT(engine_->CreateSession("x", {}),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_sessions")));
}

TEST_F(EngineTest, RejectsBadDefaultSampling) {
  SamplingOverrides s;
  s.top_p = 2;
  EXPECT_THAT(engine_->CreateSession("x", s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("default_sampling.top_p")));
}

TEST_F(EngineTest, ScoreGivesTheModelsNllForEveryToken) {
  std::string id = NewSession();
  CollectingScoreSink sink;
  auto summary = Score(id, kText, &sink);
  ASSERT_TRUE(summary.ok()) << summary.status();
  auto expected = *testing::TinyTokenizer()->EncodeWithSpans(kText);
  auto got = sink.tokens();
  ASSERT_EQ(got.size(), expected.size());
  int32_t prev = 1;  // BOS
  double total = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].token_id, expected[i].id);
    EXPECT_EQ(got[i].position, i + 1);
    EXPECT_EQ(got[i].byte_begin, expected[i].begin);
    EXPECT_EQ(got[i].byte_end, expected[i].end);
    EXPECT_FLOAT_EQ(got[i].nll, -fake_->LogprobsAfter(prev)[got[i].token_id]);
    total += got[i].nll;
    prev = got[i].token_id;
  }
  EXPECT_EQ(summary->tokens, expected.size());
  EXPECT_EQ(summary->bytes, sizeof(kText) - 1);
  EXPECT_NEAR(summary->total_nll, total, 1e-3);
  EXPECT_NEAR(summary->perplexity, std::exp(total / expected.size()), 1e-3);
  EXPECT_EQ(summary->position, expected.size() + 1);
  auto info = engine_->GetSession(id);
  EXPECT_EQ(info->tokens_consumed, expected.size());
  EXPECT_FALSE(info->busy);
  EXPECT_GT(fake_->score_calls.load(), 0);
}

TEST_F(EngineTest, SecondScoreCallContinuesTheSession) {
  std::string id = NewSession();
  std::string a = "first part of the text\nwith two lines\n", b = "and the second part\n";
  CollectingScoreSink one, two, whole;
  ASSERT_TRUE(Score(id, a, &one).ok());
  ASSERT_TRUE(Score(id, b, &two).ok());
  std::string id2 = NewSession();
  ASSERT_TRUE(Score(id2, a + b, &whole).ok());
  auto split = one.tokens();
  for (auto& t : two.tokens()) split.push_back(t);
  auto all = whole.tokens();
  ASSERT_EQ(split.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(split[i].token_id, all[i].token_id);
    EXPECT_EQ(split[i].position, all[i].position);
    EXPECT_FLOAT_EQ(split[i].nll, all[i].nll);
  }
}

TEST_F(EngineTest, TopKAlternatives) {
  std::string id = NewSession();
  CollectingScoreSink sink;
  ScoreOptions o;
  o.top_k = 3;
  auto call = engine_->StartScore(id, o, &sink);
  ASSERT_TRUE(call.ok());
  ASSERT_TRUE((*call)->Append(kText).ok());
  BRT_ASSERT_OK((*call)->CloseInput());
  ASSERT_TRUE(sink.Wait().ok());
  for (const auto& t : sink.tokens()) {
    ASSERT_EQ(t.top.size(), 3u);
    EXPECT_GE(t.top[0].logprob, t.top[1].logprob);
  }
}

TEST_F(EngineTest, RejectsBadScoreInput) {
  std::string id = NewSession();
  CollectingScoreSink sink;
  ScoreOptions o;
  o.top_k = 21;
  EXPECT_THAT(engine_->StartScore(id, o, &sink),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top_k must be in [0, 20]")));
  EXPECT_THAT(engine_->StartScore("s_unknown", {}, &sink), StatusIs(absl::StatusCode::kNotFound));
  // Empty call.
  CollectingScoreSink empty;
  auto call = engine_->StartScore(id, {}, &empty);
  ASSERT_TRUE(call.ok());
  BRT_EXPECT_OK((*call)->CloseInput());
  EXPECT_THAT(empty.Wait(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(EngineTest, RejectsOversizedChunk) {
  EngineOptions o;
  o.max_chunk_bytes = 16;
  Start(o);
  std::string id = NewSession();
  CollectingScoreSink sink;
  auto call = engine_->StartScore(id, {}, &sink);
  ASSERT_TRUE(call.ok());
  EXPECT_THAT((*call)->Append(std::string(17, 'a')),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_chunk_bytes")));
  (*call)->Cancel();
  EXPECT_THAT(sink.Wait(), StatusIs(absl::StatusCode::kCancelled));
}

TEST_F(EngineTest, RejectsWhenQueueFull) {
  EngineOptions o;
  o.max_queue = 1;
  Start(o);
  std::string a = NewSession(), b = NewSession();
  CollectingScoreSink sa, sb;
  auto first = engine_->StartScore(a, {}, &sa);
  ASSERT_TRUE(first.ok());
  EXPECT_THAT(engine_->StartScore(b, {}, &sb),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("max_queue")));
  ASSERT_TRUE((*first)->Append("some text\n").ok());
  BRT_ASSERT_OK((*first)->CloseInput());
  ASSERT_TRUE(sa.Wait().ok());
  // The slot is free again.
  auto second = engine_->StartScore(b, {}, &sb);
  ASSERT_TRUE(second.ok());
  (*second)->Cancel();
  sb.Wait().IgnoreError();
}

TEST_F(EngineTest, BusySessionIsFailedPrecondition) {
  std::string a = NewSession();
  CollectingScoreSink s1, s2;
  auto first = engine_->StartScore(a, {}, &s1);
  ASSERT_TRUE(first.ok());
  EXPECT_THAT(engine_->StartScore(a, {}, &s2), StatusIs(absl::StatusCode::kFailedPrecondition));
  (*first)->Cancel();
  EXPECT_THAT(s1.Wait(), StatusIs(absl::StatusCode::kCancelled));
}

TEST_F(EngineTest, BatchesScoreBlocksAcrossSessions) {
  fake_->SetGated(true);
  std::vector<std::unique_ptr<CollectingScoreSink>> sinks;
  std::vector<std::unique_ptr<ScoreCall>> calls;
  for (int i = 0; i < 4; ++i) {
    sinks.push_back(std::make_unique<CollectingScoreSink>());
    auto call = engine_->StartScore(NewSession(), {}, sinks.back().get());
    ASSERT_TRUE(call.ok());
    ASSERT_TRUE((*call)->Append(kText).ok());
    BRT_ASSERT_OK((*call)->CloseInput());
    calls.push_back(*std::move(call));
  }
  fake_->SetGated(false);
  for (auto& s : sinks) ASSERT_TRUE(s->Wait().ok());
  EXPECT_GT(fake_->max_score_batch.load(), 1);
  EXPECT_GT(engine_->stats().score.max_batch, 1u);
  // Batched results equal the unbatched model.
  auto first = sinks[0]->tokens();
  for (auto& s : sinks) {
    auto t = s->tokens();
    ASSERT_EQ(t.size(), first.size());
    for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i].nll, first[i].nll);
  }
}

TEST_F(EngineTest, CancelledScoreLeavesAUsableSession) {
  std::string id = NewSession();
  fake_->SetGated(true);
  CollectingScoreSink sink;
  auto call = engine_->StartScore(id, {}, &sink);
  ASSERT_TRUE(call.ok());
  ASSERT_TRUE((*call)->Append(kText).ok());
  absl::SleepFor(absl::Milliseconds(50));  // the executor is inside a gated model call
  (*call)->Cancel();
  fake_->SetGated(false);
  EXPECT_THAT(sink.Wait(), StatusIs(absl::StatusCode::kCancelled));
  auto info = engine_->GetSession(id);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->busy);
  const uint64_t consumed = info->tokens_consumed;
  // Scored tokens so far all made it; the session continues from there.
  EXPECT_EQ(sink.tokens().size(), consumed);
  CollectingScoreSink again;
  auto summary = Score(id, "more text\n", &again);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_FALSE(again.tokens().empty());
  EXPECT_EQ(again.tokens()[0].position, consumed + 1);
}

TEST_F(EngineTest, GreedyGenerationFollowsTheModel) {
  std::string id = NewSession();
  CollectingGenerateSink sink;
  GenerateParams p;
  p.prompt = "hello world";
  p.max_tokens = 5;
  p.sampling.temperature = 0;
  auto call = engine_->StartGenerate(id, p, &sink);
  ASSERT_TRUE(call.ok()) << call.status();
  auto summary = sink.Wait();
  ASSERT_TRUE(summary.ok()) << summary.status();
  auto prompt = *testing::TinyTokenizer()->Encode(p.prompt);
  std::vector<int32_t> want;
  for (int i = 1; i <= 5; ++i) want.push_back((prompt.back() + i) % kVocab);
  EXPECT_EQ(sink.ids(), want);
  EXPECT_EQ(summary->reason, FinishReason::kLength);
  EXPECT_EQ(summary->prompt_tokens, prompt.size());
  EXPECT_EQ(summary->generated_tokens, 5u);
  EXPECT_EQ(summary->session_position, 1 + prompt.size() + 5);
  auto tokens = sink.tokens();
  EXPECT_EQ(tokens[0].position, 1 + prompt.size());
  EXPECT_NEAR(tokens[0].logprob, std::log(0.5), 1e-5);
  // Generated tokens are part of the session.
  EXPECT_EQ(engine_->GetSession(id)->tokens_consumed, prompt.size() + 5);
}

TEST_F(EngineTest, EosEndsGeneration) {
  std::string id = NewSession();
  CollectingGenerateSink sink;
  GenerateParams p;  // after BOS (1) the fake predicts 2 = EOS
  p.max_tokens = 5;
  p.sampling.temperature = 0;
  ASSERT_TRUE(engine_->StartGenerate(id, p, &sink).ok());
  auto summary = sink.Wait();
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->reason, FinishReason::kEos);
  EXPECT_EQ(summary->generated_tokens, 0u);
}

TEST_F(EngineTest, SameSeedSameOutput) {
  auto run = [&](uint64_t seed) {
    std::string id = NewSession();
    CollectingGenerateSink sink;
    GenerateParams p;
    p.prompt = "a seed test";
    p.max_tokens = 20;
    p.sampling.seed = seed;
    p.sampling.temperature = 1.0f;
    EXPECT_TRUE(engine_->StartGenerate(id, p, &sink).ok());
    EXPECT_TRUE(sink.Wait().ok());
    return sink.ids();
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST_F(EngineTest, RejectsBadGenerateInput) {
  std::string id = NewSession();
  CollectingGenerateSink sink;
  GenerateParams p;
  p.max_tokens = 5000;
  EXPECT_THAT(
      engine_->StartGenerate(id, p, &sink),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_tokens must be in [0, 4096]")));
  p.max_tokens = 0;
  EXPECT_THAT(engine_->StartGenerate(id, p, &sink), StatusIs(absl::StatusCode::kInvalidArgument));
  p.max_tokens = 3;
  p.sampling.min_p = -1;
  EXPECT_THAT(engine_->StartGenerate(id, p, &sink),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sampling.min_p")));
  p.sampling = {};
  EXPECT_THAT(engine_->StartGenerate("s_nope", p, &sink), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(engine_->StartGenerate("", p, &sink), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(EngineTest, DeletingASessionEndsItsGeneration) {
  std::string id = NewSession();
  CollectingGenerateSink sink;
  GenerateParams p;
  p.prompt = "x";
  p.max_tokens = 4000;
  p.sampling.temperature = 0;
  fake_->SetGated(true);  // the executor blocks inside its first model call
  ASSERT_TRUE(engine_->StartGenerate(id, p, &sink).ok());
  absl::SleepFor(absl::Milliseconds(20));
  BRT_ASSERT_OK(engine_->DeleteSession(id));
  fake_->SetGated(false);
  auto summary = sink.Wait();
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->reason, FinishReason::kCancelled);
}


// A snapshot store whose reads hang until released (a frozen Redis), for the test below.
class HangingStore final : public persistence::SnapshotStore {
 public:
  absl::Status Put(std::string_view, std::string_view) override { return absl::OkStatus(); }
  absl::StatusOr<std::string> Get(std::string_view) override {
    entered_.Notify();
    release_.WaitForNotification();
    return absl::NotFoundError("nothing stored");
  }
  absl::Status Delete(std::string_view) override { return absl::NotFoundError("nothing stored"); }
  absl::StatusOr<std::vector<std::string>> List() override { return std::vector<std::string>{}; }
  std::string Describe() const override { return "hanging"; }

  absl::Notification entered_;  // a read is hanging
  absl::Notification release_;
};

// Calls on a loaded session never wait on the store, even behind another id's hung restore whose
// store lock (a striped one) is the same: the CI run of 2026-12-03 saw a GetSession of a loaded session
// wait 2.7 s, until the hung calls' deadline, for one in 64 such pairs.
TEST_F(EngineTest, ALoadedSessionDoesNotWaitBehindAHungStoreRead) {
  HangingStore store;
  EngineOptions options;
  options.snapshot_store = &store;
  Start(options);
  const std::string loaded = NewSession();
  // An id on the loaded one's lock stripe for any power-of-two stripe count up to 4096.
  const size_t stripe = std::hash<std::string>()(loaded) % 4096;
  std::string hung;
  do {
    hung = NewSessionId();
  } while (std::hash<std::string>()(hung) % 4096 != stripe);
  std::thread restore([&] {
    EXPECT_THAT(engine_->GetSession(hung, {}).status(), StatusIs(absl::StatusCode::kNotFound));
  });
  store.entered_.WaitForNotification();

  absl::Notification served;
  std::thread use([&] {
    EXPECT_TRUE(engine_->GetSession(loaded, {}).ok());
    CollectingScoreSink sink;
    auto call = engine_->StartScore(loaded, ScoreOptions{}, &sink);
    ASSERT_TRUE(call.ok()) << call.status();
    ASSERT_TRUE((*call)->Append("In the beginning").ok());
    BRT_ASSERT_OK((*call)->CloseInput());
    EXPECT_TRUE(sink.Wait().ok());
    served.Notify();
  });
  const bool in_time = served.WaitForNotificationWithTimeout(absl::Seconds(10));
  store.release_.Notify();
  use.join();
  restore.join();
  EXPECT_TRUE(in_time) << "a loaded session's calls waited for another id's hung store read";
}

}  // namespace
}  // namespace brt
