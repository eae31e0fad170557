// Engine end to end with the real ModelRunner and the tiny export (no gRPC).
#include <gtest/gtest.h>

#include <thread>

#include "server/core/engine.h"
#include "server/model/model_runner.h"
#include "tests/cpp/testing/fake_backend.h"
#include "tests/cpp/testing/sinks.h"
#include "tests/cpp/testing/status_matchers.h"

namespace brt {
namespace {

using ::brt::testing::CollectingGenerateSink;
using ::brt::testing::CollectingScoreSink;
using ::brt::testing::TinyDir;

const std::string& Text() {
  static const std::string text = [] {
    std::string t;
    for (int i = 0; i < 4; ++i) {
      t += "And God said, Let there be a firmament in the midst of the waters,\n";
      t += "and let it divide the waters from the waters. caf\xC3\xA9 \xF0\x9F\x98\x80 \xFF end";
    }
    return t;
  }();
  return text;
}

std::unique_ptr<ModelRunner> LoadTiny() {
  ModelRunnerOptions o;
  o.model_path = TinyDir() + "/brt.pt";
  o.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
  o.threads = 1;
  return *ModelRunner::Create(o);
}

// Reference: BOS then every token through decode_step, one at a time.
std::vector<float> ReferenceNll(const std::vector<int32_t>& tokens) {
  auto r = LoadTiny();
  EXPECT_TRUE(r->InitSlots({0}).ok());
  auto d = *r->DecodeStep({DecodeRow{0, r->metadata().bos_id, 0}});
  std::vector<float> nll;
  for (size_t i = 0; i < tokens.size(); ++i) {
    nll.push_back(-d[0].logprobs[tokens[i]]);
    d = *r->DecodeStep({DecodeRow{0, tokens[i], static_cast<int64_t>(i + 1)}});
  }
  return nll;
}

class EngineTinyModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.max_batch_size = 8;
    auto e = Engine::Create(o, LoadTiny(), testing::TinyTokenizer());
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = *std::move(e);
  }
  std::vector<TokenScoreResult> Score(const std::string& id, const std::string& text,
                                      size_t chunk) {
    CollectingScoreSink sink;
    auto call = engine_->StartScore(id, ScoreOptions{}, &sink);
    EXPECT_TRUE(call.ok()) << call.status();
    for (size_t pos = 0; pos < text.size(); pos += chunk) {
      EXPECT_TRUE((*call)->Append(std::string_view(text).substr(pos, chunk)).ok());
    }
    EXPECT_TRUE((*call)->CloseInput().ok());
    EXPECT_TRUE(sink.Wait().ok());
    return sink.tokens();
  }
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTinyModelTest, ScoreMatchesTokenByTokenReference) {
  auto ids = *testing::TinyTokenizer()->Encode(Text());
  ASSERT_GT(ids.size(), 5u * 8);
  std::vector<float> want = ReferenceNll(ids);
  for (size_t chunk : {7u, 64u, 100000u}) {
    auto id = engine_->CreateSession("", {})->id;
    auto got = Score(id, Text(), chunk);
    ASSERT_EQ(got.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(got[i].token_id, ids[i]);
      EXPECT_NEAR(got[i].nll, want[i], 1e-4) << "token " << i << " chunk " << chunk;
    }
  }
}

TEST_F(EngineTinyModelTest, ConcurrentSessionsMatchAloneAndBatch) {
  auto alone_id = engine_->CreateSession("", {})->id;
  auto alone = Score(alone_id, Text(), 1000);
  std::vector<std::vector<TokenScoreResult>> results(6);
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      auto id = engine_->CreateSession("", {})->id;
      results[i] = Score(id, Text(), 5 + i);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_EQ(r.size(), alone.size());
    for (size_t i = 0; i < r.size(); ++i) EXPECT_NEAR(r[i].nll, alone[i].nll, 1e-4);
  }
  StatsSnapshot st = engine_->stats();
  EXPECT_GT(std::max(st.score.max_batch, st.decode.max_batch), 1u);
}

TEST_F(EngineTinyModelTest, GreedyGenerationIsTheArgmaxChain) {
  auto id = engine_->CreateSession("", {})->id;
  CollectingGenerateSink sink;
  GenerateParams p;
  p.prompt = "And God said";
  p.max_tokens = 12;
  p.sampling.temperature = 0;
  ASSERT_TRUE(engine_->StartGenerate(id, p, &sink).ok());
  auto summary = sink.Wait();
  ASSERT_TRUE(summary.ok()) << summary.status();
  // Reference: the argmax chain through decode_step.
  auto r = LoadTiny();
  auto prompt = *testing::TinyTokenizer()->Encode(p.prompt);
  std::vector<int32_t> feed = {r->metadata().bos_id};
  feed.insert(feed.end(), prompt.begin(), prompt.end());
  ASSERT_TRUE(r->InitSlots({0}).ok());
  std::vector<float> lp;
  int64_t pos = 0;
  for (int32_t t : feed) {
    auto d = *r->DecodeStep({DecodeRow{0, t, pos++}});
    lp = d[0].logprobs;
  }
  std::vector<int32_t> want;
  for (int i = 0; i < 12; ++i) {
    int32_t t = static_cast<int32_t>(std::max_element(lp.begin(), lp.end()) - lp.begin());
    if (t == r->metadata().eos_id) break;
    want.push_back(t);
    auto d = *r->DecodeStep({DecodeRow{0, t, pos++}});
    lp = d[0].logprobs;
  }
  EXPECT_EQ(sink.ids(), want);
  // The session continues after the generated tokens.
  EXPECT_EQ(engine_->GetSession(id)->tokens_consumed, prompt.size() + want.size());
}

// Seeded sampling with several sessions at once: their draws run together on the runner's row workers
// (ModelBackend::ForEachRow), and each session still draws exactly the tokens it draws alone.
TEST(EngineTinyModelSamplingTest, SessionsSamplingTogetherDrawWhatEachDrawsAlone) {
  ModelRunnerOptions ro;
  ro.model_path = TinyDir() + "/brt.pt";
  ro.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
  ro.threads = 2;  // two row workers: the draws run in parallel
  auto runner = ModelRunner::Create(ro);
  ASSERT_TRUE(runner.ok()) << runner.status();
  auto e = Engine::Create(EngineOptions{}, *std::move(runner), testing::TinyTokenizer());
  ASSERT_TRUE(e.ok()) << e.status();
  Engine& engine = **e;
  constexpr int kSessions = 4;
  auto params = [](int i) {
    GenerateParams p;
    p.prompt = i % 2 == 0 ? "And God said" : "In the beginning";
    p.max_tokens = 24;
    p.sampling.temperature = 0.9f;
    p.sampling.top_p = 0.9f;
    p.sampling.seed = 100 + static_cast<uint64_t>(i);
    return p;
  };
  std::vector<CollectingGenerateSink> together(kSessions);
  for (int i = 0; i < kSessions; ++i) {
    auto id = engine.CreateSession("", {})->id;
    ASSERT_TRUE(engine.StartGenerate(id, params(i), &together[static_cast<size_t>(i)]).ok());
  }
  for (auto& sink : together) ASSERT_TRUE(sink.Wait().ok());
  for (int i = 0; i < kSessions; ++i) {
    CollectingGenerateSink alone;
    auto id = engine.CreateSession("", {})->id;
    ASSERT_TRUE(engine.StartGenerate(id, params(i), &alone).ok());
    ASSERT_TRUE(alone.Wait().ok());
    EXPECT_GT(alone.ids().size(), 4u);
    EXPECT_EQ(together[static_cast<size_t>(i)].ids(), alone.ids()) << "session " << i;
  }
  EXPECT_GT(engine.stats().decode.max_batch, 1u);
}

// Chunked prefill: while a session generates, another session's text arriving mid-block is fed in
// spans of at most chunked_prefill_tokens tokens (possibly fewer than the rest of the block), over
// several steps. Every score still equals the token-by-token reference.
TEST_F(EngineTinyModelTest, ChunkedPrefillWhileAnotherSessionGeneratesMatchesTheReference) {
  EngineOptions o;
  o.chunked_prefill_tokens = 2;
  // The generation must outlast the score and the reference computed after it (it is cancelled at the
  // end): far more tokens than either takes.
  o.max_tokens_cap = 1000000;
  auto e = Engine::Create(o, LoadTiny(), testing::TinyTokenizer());
  ASSERT_TRUE(e.ok()) << e.status();
  engine_ = *std::move(e);
  auto gen_id = engine_->CreateSession("", {})->id;
  CollectingGenerateSink gen;
  GenerateParams p;
  p.prompt = "And God said";
  p.max_tokens = 1000000;
  p.sampling.temperature = 0;
  ASSERT_TRUE(engine_->StartGenerate(gen_id, p, &gen).ok());
  for (int i = 0; i < 2000 && gen.tokens().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_FALSE(gen.tokens().empty()) << "the generation did not start";
  // Short lines, sent a few bytes at a time: the Score session mostly receives tokens mid-block.
  std::string text;
  for (int i = 0; i < 40; ++i) text += "And God said " + std::to_string(i) + ",\n";
  const StatsSnapshot before = engine_->stats();
  auto ids = *testing::TinyTokenizer()->Encode(text);
  auto got = Score(engine_->CreateSession("", {})->id, text, 5);
  const StatsSnapshot after = engine_->stats();
  ASSERT_LT(gen.tokens().size(), 1000000u) << "the generation ended before the score did: nothing to test";
  std::vector<float> want = ReferenceNll(ids);
  ASSERT_EQ(got.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(got[i].token_id, ids[i]);
    EXPECT_NEAR(got[i].nll, want[i], 1e-4) << "token " << i;
  }
  const uint64_t calls = after.span.calls - before.span.calls;
  const uint64_t tokens = after.span.tokens - before.span.tokens;
  EXPECT_GT(calls, 0u) << "the text went through no span";
  EXPECT_LE(tokens, 2 * calls) << "a span call fed more than the budget while the other session decoded";
  ASSERT_TRUE(engine_->DeleteSession(gen_id).ok());
  auto ended = gen.Wait();
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->reason, FinishReason::kCancelled);
}

}  // namespace
}  // namespace brt
