// ModelRunner against the tiny random export (tests/data/tiny: W=8, vocab 4096, L=2, R=1).
#include "server/model/model_runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <tuple>
#include <set>

#include "absl/synchronization/mutex.h"
#include "tests/cpp/testing/fake_backend.h"
#include "tests/cpp/testing/status_matchers.h"

namespace brt {
namespace {

using ::brt::testing::StatusIs;
using ::brt::testing::TinyDir;

std::unique_ptr<ModelRunner> LoadTinyAs(PackedWeights how, int threads, int shards, bool freeze = true,
                                        bool native_decode = true) {
  ModelRunnerOptions o;
  o.cpu_packed_weights = how;
  o.freeze = freeze;
  o.native_decode = native_decode;
  o.model_path = TinyDir() + "/brt.pt";
  o.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
  o.threads = threads;
  o.shards = shards;
  o.max_slots = 16;
  o.initial_slots = 2;  // small, so the tests make the pools grow
  auto r = ModelRunner::Create(o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : nullptr;
}

std::unique_ptr<ModelRunner> LoadTiny(int threads = 1, int shards = 0, bool packed = true) {
  return LoadTinyAs(packed ? PackedWeights::kOn : PackedWeights::kOff, threads, shards);
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
  // Rings: W slots for the ordinary layer, 2W for the recurrent one (2*H*C*dh each) + 3*R*S*D.
  EXPECT_EQ(m.state_bytes, (2u * 32 * 8 + 2u * 32 * 16 + 3u * 1 * 4 * 32) * 4);
}

TEST(ModelRunnerTest, PoolsStartWithInitialSlotsWithinMaxSlots) {
  for (auto [initial, max, want] : {std::tuple{64, 1024, 64}, std::tuple{64, 16, 16}, std::tuple{5, 16, 8}}) {
    ModelRunnerOptions o;
    o.model_path = TinyDir() + "/brt.pt";
    o.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
    o.threads = 1;
    o.initial_slots = initial;
    o.max_slots = max;
    auto r = ModelRunner::Create(o);
    ASSERT_TRUE(r.ok()) << r.status();
    // A power of two at least initial_slots, at most max_slots.
    EXPECT_EQ((*r)->pool_capacity(), want) << initial << " initial, " << max << " at most";
    ASSERT_TRUE((*r)->InitSlots({want}).ok() == (want < max)) << "beyond the start the pools grow";
  }
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
  // LibTorch's CPU matrix products have no float16 kernels: refused at load, saying so (it used to pass
  // load and crash the frozen module's first call).
  o.dtype = "float16";
  o.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
  auto half = ModelRunner::Create(o);
  EXPECT_THAT(half, StatusIs(absl::StatusCode::kInvalidArgument));
  if (!half.ok()) {
    EXPECT_NE(half.status().message().find("--dtype=float16 on cpu: the model cannot run"), std::string::npos)
        << half.status();
  }
  o.dtype = "float32";
  o.device = "tpu";
  EXPECT_THAT(ModelRunner::Create(o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.model_path = TinyDir() + "/tokenizer.model";  // not TorchScript
  o.device = "cpu";
  EXPECT_THAT(ModelRunner::Create(o), StatusIs(absl::StatusCode::kInternal));
}

// Feeds `tokens` at positions [start, start + n) into `slot` one token at a time; returns the log-probs
// after each.
std::vector<std::vector<float>> DecodeChain(ModelRunner& r, int32_t slot, int64_t start,
                                            const std::vector<int32_t>& tokens) {
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto d = r.DecodeStep({DecodeRow{slot, tokens[i], start + static_cast<int64_t>(i)}});
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) break;
    out.push_back((*d)[0].logprobs);
  }
  return out;
}

TEST(ModelRunnerTest, ScoreBlocksEqualsDecodeChainAndMemoryAgrees) {
  auto r = LoadTiny();
  ASSERT_NE(r, nullptr);
  const int w = r->metadata().window;
  std::vector<int32_t> tokens = RandomTokens(3 * w, 1);
  tokens[0] = r->metadata().bos_id;
  ASSERT_TRUE(r->InitSlots({0, 5}).ok());  // slot 5 is beyond the initial pool: it grows

  auto blocks = r->ScoreBlocks({ScoreBlocksRow{5, 0, tokens}}, 2);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  const ScoreBlocksResult& b = (*blocks)[0];
  ASSERT_EQ(b.target_logprobs.size(), tokens.size() - 1);
  ASSERT_EQ(b.topk_ids.size(), tokens.size() * 2);

  auto chain = DecodeChain(*r, 0, 0, tokens);
  ASSERT_EQ(chain.size(), tokens.size());
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    EXPECT_NEAR(chain[i][tokens[i + 1]], b.target_logprobs[i], 1e-5) << "position " << i + 1;
    EXPECT_NEAR(chain[i][b.topk_ids[i * 2]], b.topk_logprobs[i * 2], 1e-5);
  }
  for (size_t v = 0; v < chain.back().size(); v += 97)
    EXPECT_NEAR(chain.back()[v], b.next_logprobs[v], 1e-5);
  // The memories agree too, as bytes and by what they predict next.
  auto m0 = r->ExportSlot(0), m5 = r->ExportSlot(5);
  ASSERT_TRUE(m0.ok() && m5.ok());
  EXPECT_EQ(r->ExportBytes().kv, m0->kv.data.size());
  EXPECT_EQ(r->ExportBytes().state, m0->state.data.size());
  const float* x = reinterpret_cast<const float*>(m0->kv.data.data());
  const float* y = reinterpret_cast<const float*>(m5->kv.data.data());
  for (size_t i = 0; i < m0->kv.data.size() / 4; ++i) ASSERT_NEAR(x[i], y[i], 1e-5) << "kv " << i;
  std::vector<int32_t> more = RandomTokens(w, 2);
  auto c1 = r->ScoreBlocks({ScoreBlocksRow{5, 3 * w, more}}, 0);
  auto c2 = r->ScoreBlocks({ScoreBlocksRow{0, 3 * w, more}}, 0);
  ASSERT_TRUE(c1.ok() && c2.ok());
  for (size_t i = 0; i < (*c1)[0].target_logprobs.size(); ++i) {
    EXPECT_NEAR((*c1)[0].target_logprobs[i], (*c2)[0].target_logprobs[i], 1e-5);
  }
}

TEST(ModelRunnerTest, BatchedEqualsAloneAndOtherSlotsAreUntouched) {
  auto r = LoadTiny();
  ASSERT_NE(r, nullptr);
  const int w = r->metadata().window;
  ASSERT_TRUE(r->InitSlots({1, 2, 3, 4, 7}).ok());
  std::vector<int32_t> a = RandomTokens(2 * w, 3), b = RandomTokens(2 * w, 4);
  // Slot 7 reads some text and is then left alone: nothing below may change it.
  ASSERT_TRUE(r->ScoreBlocks({ScoreBlocksRow{7, 0, a}}, 0).ok());
  auto before = r->ExportSlot(7);
  auto batched = r->ScoreBlocks({ScoreBlocksRow{3, 0, a}, ScoreBlocksRow{1, 0, b}}, 0);
  auto alone_b = r->ScoreBlocks({ScoreBlocksRow{2, 0, b}}, 0);
  ASSERT_TRUE(batched.ok() && alone_b.ok());
  for (size_t i = 0; i < (*alone_b)[0].target_logprobs.size(); ++i) {
    EXPECT_NEAR((*batched)[1].target_logprobs[i], (*alone_b)[0].target_logprobs[i], 1e-5);
  }
  // Decode rows at different offsets in their blocks, batched, slots out of order; a row that
  // completes a block (offset W-1) runs the state update alone.
  ASSERT_TRUE(r->CopySlot(3, 4).ok());  // 4 continues like 3
  auto chain3 = DecodeChain(*r, 3, 2 * w, {a[0], a[1], a[2], a[3], a[4], a[5], a[6]});
  auto mixed = r->DecodeStep({DecodeRow{1, b[0], 2 * w}, DecodeRow{3, a[7], 2 * w + 7}});
  ASSERT_TRUE(mixed.ok());
  auto chain4 = DecodeChain(*r, 4, 2 * w, {a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]});
  ASSERT_EQ(chain4.size(), 8u);
  // Equal to fp32 rounding, not bit for bit: a one-row step multiplies by matrix-vector products (see
  // model/brt/model.py, linear), a batched one by matrix products.
  for (size_t v = 0; v < 4096; v += 101) {
    EXPECT_NEAR((*mixed)[1].logprobs[v], chain4[7][v], 1e-5) << "batched decode differs from alone";
  }
  auto after3 = r->ExportSlot(3), after4 = r->ExportSlot(4);
  ASSERT_EQ(after3->kv.data.size(), after4->kv.data.size());
  ASSERT_EQ(after3->state.data.size(), after4->state.data.size());
  auto near = [](const std::string& a, const std::string& b) {
    const float* x = reinterpret_cast<const float*>(a.data());
    const float* y = reinterpret_cast<const float*>(b.data());
    double worst = 0;
    for (size_t i = 0; i < a.size() / 4; ++i) worst = std::max(worst, static_cast<double>(std::fabs(x[i] - y[i])));
    return worst;
  };
  EXPECT_LT(near(after3->kv.data, after4->kv.data), 1e-5);
  EXPECT_LT(near(after3->state.data, after4->state.data), 1e-5);
  auto after7 = r->ExportSlot(7);
  EXPECT_EQ(before->kv.data, after7->kv.data);
  EXPECT_EQ(before->state.data, after7->state.data);
}

// Row shards: a batched call split across the runner's workers gives each row what the row gets alone on
// an unsharded runner (to fp32 rounding), touches only its own slots, and is reproducible bit for bit.
TEST(ModelRunnerTest, ShardedCallsEqualUnshardedOnesAndAreReproducible) {
  auto sharded = LoadTiny(/*threads=*/2, /*shards=*/2);
  auto plain = LoadTiny(/*threads=*/1, /*shards=*/1);
  ASSERT_NE(sharded, nullptr);
  ASSERT_NE(plain, nullptr);
  const int w = sharded->metadata().window;
  std::vector<std::vector<int32_t>> texts;
  for (uint32_t i = 0; i < 5; ++i) texts.push_back(RandomTokens(2 * w, 10 + i));
  ASSERT_TRUE(sharded->InitSlots({0, 1, 2, 3, 4, 9, 10, 11, 12, 13, 15}).ok());
  ASSERT_TRUE(plain->InitSlots({0, 1, 2, 3, 4}).ok());
  // Slot 15 is left alone: nothing below may change it.
  ASSERT_TRUE(sharded->ScoreBlocks({ScoreBlocksRow{15, 0, texts[0]}}, 0).ok());
  auto before = sharded->ExportSlot(15);
  // Five rows in two shards (slots out of order), with top-k.
  std::vector<ScoreBlocksRow> rows;
  for (int i = 0; i < 5; ++i) rows.push_back(ScoreBlocksRow{4 - i, 0, texts[i]});
  auto got = sharded->ScoreBlocks(rows, 3);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int i = 0; i < 5; ++i) {
    auto alone = plain->ScoreBlocks({ScoreBlocksRow{i, 0, texts[i]}}, 3);
    ASSERT_TRUE(alone.ok());
    const ScoreBlocksResult& a = (*alone)[0];
    const ScoreBlocksResult& g = (*got)[i];
    ASSERT_EQ(g.target_logprobs.size(), a.target_logprobs.size());
    for (size_t t = 0; t < a.target_logprobs.size(); ++t) {
      ASSERT_NEAR(g.target_logprobs[t], a.target_logprobs[t], 1e-5) << "row " << i << " token " << t;
    }
    EXPECT_EQ(g.topk_ids, a.topk_ids) << "row " << i;
    for (size_t v = 0; v < a.next_logprobs.size(); v += 53) ASSERT_NEAR(g.next_logprobs[v], a.next_logprobs[v], 1e-5);
  }
  // Decode: the five rows, one of which completes a block (the state update runs in its shard).
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(sharded->CopySlot(4 - i, 9 + i).ok());  // copies to repeat
  auto step = [&](ModelRunner& r, int32_t base) {
    std::vector<DecodeRow> d;
    for (int i = 0; i < 5; ++i) d.push_back(DecodeRow{base + i, texts[i][0], 2 * w});
    return r.DecodeStep(d);
  };
  auto d1 = step(*sharded, 9);   // slots 9..13 hold rows 0..4
  ASSERT_TRUE(d1.ok()) << d1.status();
  for (int i = 0; i < 5; ++i) {
    auto alone = plain->DecodeStep({DecodeRow{i, texts[i][0], 2 * w}});
    ASSERT_TRUE(alone.ok());
    for (size_t v = 0; v < 4096; v += 61) ASSERT_NEAR((*d1)[i].logprobs[v], (*alone)[0].logprobs[v], 1e-5);
  }
  // The same call on the same memory gives the same bits: rows 0..4 again from their copies in 4..0.
  std::vector<DecodeRow> again;
  for (int i = 0; i < 5; ++i) again.push_back(DecodeRow{4 - i, texts[i][0], 2 * w});
  auto d2 = sharded->DecodeStep(again);
  ASSERT_TRUE(d2.ok());
  for (int i = 0; i < 5; ++i) EXPECT_EQ((*d1)[i].logprobs, (*d2)[i].logprobs) << "row " << i;
  // A block completes in every row (position 3W-1 after W-1 more steps): state updates in both shards.
  for (int t = 1; t < w; ++t) {
    std::vector<DecodeRow> a, b;
    for (int i = 0; i < 5; ++i) {
      a.push_back(DecodeRow{9 + i, texts[i][t], 2 * w + t});
      b.push_back(DecodeRow{4 - i, texts[i][t], 2 * w + t});
    }
    ASSERT_TRUE(sharded->DecodeStep(a).ok());
    ASSERT_TRUE(sharded->DecodeStep(b).ok());
  }
  for (int i = 0; i < 5; ++i) {
    auto x = sharded->ExportSlot(9 + i), y = sharded->ExportSlot(4 - i);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_EQ(x->state.data, y->state.data) << "row " << i;
    EXPECT_EQ(x->kv.data, y->kv.data) << "row " << i;
  }
  auto after = sharded->ExportSlot(15);
  EXPECT_EQ(before->kv.data, after->kv.data);
  EXPECT_EQ(before->state.data, after->state.data);
}

// Packed weights (XNNPACK, the default on CPU): the same function as ATen's products to fp32 rounding;
// each shard runs its own packed copy (lanes), and a row's results are bitwise those it gets alone on an
// unsharded packed runner, for scoring, decode steps and the state update.
TEST(ModelRunnerTest, PackedWeightsEqualPlainOnesAndShardsAreBitwiseAlone) {
  auto sharded = LoadTiny(/*threads=*/2, /*shards=*/2);
  auto single = LoadTiny(/*threads=*/2, /*shards=*/1);
  auto plain = LoadTiny(/*threads=*/1, /*shards=*/1, /*packed=*/false);
  ASSERT_NE(sharded, nullptr);
  ASSERT_NE(single, nullptr);
  ASSERT_NE(plain, nullptr);
  EXPECT_TRUE(sharded->packed_weights());
  EXPECT_TRUE(single->packed_weights());
  EXPECT_FALSE(plain->packed_weights());
  const int w = sharded->metadata().window;
  std::vector<std::vector<int32_t>> texts;
  for (uint32_t i = 0; i < 4; ++i) texts.push_back(RandomTokens(2 * w, 40 + i));
  for (auto* r : {sharded.get(), single.get(), plain.get()}) ASSERT_TRUE(r->InitSlots({0, 1, 2, 3}).ok());
  std::vector<ScoreBlocksRow> rows;
  for (int i = 0; i < 4; ++i) rows.push_back(ScoreBlocksRow{i, 0, texts[i]});
  auto got = sharded->ScoreBlocks(rows, 2);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int i = 0; i < 4; ++i) {
    auto alone = single->ScoreBlocks({rows[i]}, 2);
    auto ref = plain->ScoreBlocks({rows[i]}, 2);
    ASSERT_TRUE(alone.ok() && ref.ok());
    EXPECT_EQ((*got)[i].target_logprobs, (*alone)[0].target_logprobs) << "row " << i;
    EXPECT_EQ((*got)[i].next_logprobs, (*alone)[0].next_logprobs) << "row " << i;
    for (size_t t = 0; t < (*ref)[0].target_logprobs.size(); ++t) {
      ASSERT_NEAR((*got)[i].target_logprobs[t], (*ref)[0].target_logprobs[t], 1e-5) << "row " << i;
    }
  }
  // A block of decode steps (the last completes it: the state update runs in each shard).
  for (int t = 0; t < w; ++t) {
    std::vector<DecodeRow> d;
    for (int i = 0; i < 4; ++i) d.push_back(DecodeRow{i, texts[i][t], 2 * w + t});
    auto a = sharded->DecodeStep(d);
    ASSERT_TRUE(a.ok()) << a.status();
    for (int i = 0; i < 4; ++i) {
      auto b = single->DecodeStep({d[i]});
      auto c = plain->DecodeStep({d[i]});
      ASSERT_TRUE(b.ok() && c.ok());
      ASSERT_EQ((*a)[i].logprobs, (*b)[0].logprobs) << "row " << i << " step " << t;
      for (size_t v = 0; v < (*c)[0].logprobs.size(); v += 37) {
        ASSERT_NEAR((*a)[i].logprobs[v], (*c)[0].logprobs[v], 1e-5) << "row " << i << " step " << t;
      }
    }
  }
  for (int i = 0; i < 4; ++i) {
    auto x = sharded->ExportSlot(i), y = single->ExportSlot(i);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_EQ(x->state.data, y->state.data) << "row " << i;
    EXPECT_EQ(x->kv.data, y->kv.data) << "row " << i;
  }
}

// Weights transposed at load (--cpu_packed_weights=transposed, auto on x86-64 without AVX-512): OpenBLAS's
// products without per-call repacking; the same function as unpacked ones to fp32 rounding, sharded,
// for scoring, decode steps and the state update. The flag's value parses; a wrong one names the choices.
TEST(ModelRunnerTest, TransposedWeightsEqualPlainOnes) {
  auto t = LoadTinyAs(PackedWeights::kTransposed, /*threads=*/2, /*shards=*/2);
  auto plain = LoadTiny(/*threads=*/1, /*shards=*/1, /*packed=*/false);
  ASSERT_NE(t, nullptr);
  ASSERT_NE(plain, nullptr);
  EXPECT_TRUE(t->transposed_weights());
  EXPECT_FALSE(t->packed_weights());
  EXPECT_FALSE(plain->transposed_weights());
  const int w = t->metadata().window;
  std::vector<std::vector<int32_t>> texts;
  for (uint32_t i = 0; i < 4; ++i) texts.push_back(RandomTokens(2 * w, 80 + i));
  for (auto* r : {t.get(), plain.get()}) ASSERT_TRUE(r->InitSlots({0, 1, 2, 3}).ok());
  std::vector<ScoreBlocksRow> rows;
  for (int i = 0; i < 4; ++i) rows.push_back(ScoreBlocksRow{i, 0, texts[i]});
  auto got = t->ScoreBlocks(rows, 2);
  auto want = plain->ScoreBlocks(rows, 2);
  ASSERT_TRUE(got.ok() && want.ok());
  for (int i = 0; i < 4; ++i) {
    for (size_t k = 0; k < (*want)[i].target_logprobs.size(); ++k) {
      ASSERT_NEAR((*got)[i].target_logprobs[k], (*want)[i].target_logprobs[k], 1e-5) << "row " << i;
    }
  }
  for (int step = 0; step < w; ++step) {
    std::vector<DecodeRow> d;
    for (int i = 0; i < 4; ++i) d.push_back(DecodeRow{i, texts[i][step], 2 * w + step});
    auto a = t->DecodeStep(d);
    auto b = plain->DecodeStep(d);
    ASSERT_TRUE(a.ok() && b.ok());
    for (int i = 0; i < 4; ++i) {
      for (size_t v = 0; v < (*b)[i].logprobs.size(); v += 37) {
        ASSERT_NEAR((*a)[i].logprobs[v], (*b)[i].logprobs[v], 1e-5) << "row " << i << " step " << step;
      }
    }
  }
  auto parsed = ParsePackedWeights("transposed");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, PackedWeights::kTransposed);
  EXPECT_THAT(ParsePackedWeights("yes"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("transposed")));
}

// Appends the bytes of v to out.
template <typename T>
void AppendBytes(const std::vector<T>& v, std::string* out) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Every kind of call the engine makes, on fixed inputs, and every slot's memory after them, as bytes:
// scoring two blocks, decode steps across block ends (consecutive slots, read in place, and scattered
// ones, a one-row step too), spans with and without every position, a mixed call, a copy and an import.
std::string CallTrace(ModelRunner& r) {
  std::string out;
  const int w = r.metadata().window;
  std::vector<std::vector<int32_t>> text;
  for (uint32_t i = 0; i < 8; ++i) text.push_back(RandomTokens(4 * w, 120 + i));
  EXPECT_TRUE(r.InitSlots({0, 1, 2, 3, 4, 5, 6, 7}).ok());
  auto scored = r.ScoreBlocks({ScoreBlocksRow{0, 0, {text[0].begin(), text[0].begin() + 2 * w}},
                               ScoreBlocksRow{1, 0, {text[1].begin(), text[1].begin() + 2 * w}}},
                              2);
  EXPECT_TRUE(scored.ok()) << scored.status();
  if (!scored.ok()) return out;
  for (const auto& res : *scored) {
    AppendBytes(res.target_logprobs, &out);
    AppendBytes(res.topk_logprobs, &out);
    AppendBytes(res.topk_ids, &out);
    AppendBytes(res.next_logprobs, &out);
  }
  std::vector<int64_t> pos = {2 * w, 2 * w, 0, 0, 0, 0, 0, 0};
  for (int step = 0; step < w + w / 2; ++step) {
    std::vector<DecodeRow> rows;
    if (step % 3 == 2) {
      rows = {DecodeRow{5, text[5][static_cast<size_t>(pos[5])], pos[5]}};  // one row
    } else {
      for (int32_t s : {0, 1, 2}) rows.push_back(DecodeRow{s, text[s][static_cast<size_t>(pos[s])], pos[s]});
      if (step % 3 == 1) rows.push_back(DecodeRow{5, text[5][static_cast<size_t>(pos[5])], pos[5]});  // scattered
    }
    auto got = r.DecodeStep(rows);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) return out;
    for (size_t i = 0; i < rows.size(); ++i) {
      AppendBytes((*got)[i].logprobs, &out);
      ++pos[static_cast<size_t>(rows[i].slot)];
    }
  }
  std::mt19937 rng(7);
  while (pos[3] < 2 * w) {
    const int64_t len = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(w - pos[3] % w));
    std::vector<SpanRow> spans = {
        SpanRow{3, pos[3], {text[3].begin() + pos[3], text[3].begin() + pos[3] + len}}};
    auto fed = r.FeedSpans(spans, 2, /*all_positions=*/true);
    EXPECT_TRUE(fed.ok()) << fed.status();
    if (!fed.ok()) return out;
    AppendBytes((*fed)[0].target_logprobs, &out);
    AppendBytes((*fed)[0].topk_ids, &out);
    AppendBytes((*fed)[0].next_logprobs, &out);
    pos[3] += len;
  }
  auto prompt = r.FeedSpans({SpanRow{4, 0, {text[4].begin(), text[4].begin() + 5}}}, 0, /*all_positions=*/false);
  EXPECT_TRUE(prompt.ok()) << prompt.status();
  if (prompt.ok()) AppendBytes((*prompt)[0].next_logprobs, &out);
  auto mixed = r.DecodeAndFeedSpans({DecodeRow{0, text[0][static_cast<size_t>(pos[0])], pos[0]},
                                     DecodeRow{1, text[1][static_cast<size_t>(pos[1])], pos[1]}},
                                    {SpanRow{3, pos[3], {text[3].begin() + pos[3], text[3].begin() + pos[3] + 3}}},
                                    2, /*all_positions=*/true);
  EXPECT_TRUE(mixed.ok()) << mixed.status();
  if (mixed.ok()) {
    for (const auto& d : mixed->decode) AppendBytes(d.logprobs, &out);
    AppendBytes(mixed->spans[0].target_logprobs, &out);
    AppendBytes(mixed->spans[0].next_logprobs, &out);
  }
  EXPECT_TRUE(r.CopySlot(0, 6).ok());
  auto memory = r.ExportSlot(1);
  EXPECT_TRUE(memory.ok());
  if (memory.ok()) {
    EXPECT_TRUE(r.ImportSlot(7, *memory).ok());
  }
  for (int32_t s = 0; s < 8; ++s) {
    auto m = r.ExportSlot(s);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return out;
    out += m->kv.data;
    out += m->state.data;
  }
  return out;
}

// A frozen module (the default) computes what the export computes as loaded, in every bit: every call
// above and the memory they leave, with plain and transposed weights, unsharded and in 2 shards.
TEST(ModelRunnerTest, FrozenModuleGivesTheExportsBitsInEveryCall) {
  for (PackedWeights how : {PackedWeights::kOff, PackedWeights::kTransposed, PackedWeights::kOn}) {
    for (int shards : {1, 2}) {
      auto frozen = LoadTinyAs(how, /*threads=*/2, shards, /*freeze=*/true);
      auto as_is = LoadTinyAs(how, /*threads=*/2, shards, /*freeze=*/false);
      ASSERT_NE(frozen, nullptr);
      ASSERT_NE(as_is, nullptr);
      // XNNPACK's packed products cannot be frozen: that runner says so and runs as exported.
      EXPECT_EQ(frozen->frozen(), how != PackedWeights::kOn);
      EXPECT_EQ(frozen->freeze_error().empty(), how != PackedWeights::kOn) << frozen->freeze_error();
      EXPECT_FALSE(as_is->frozen());
      const std::string a = CallTrace(*frozen), b = CallTrace(*as_is);
      EXPECT_GT(a.size(), 100000u);
      EXPECT_TRUE(a == b) << "weights " << static_cast<int>(how) << ", shards " << shards << ": "
                          << a.size() << " vs " << b.size() << " bytes";
    }
  }
}

// --dtype=bfloat16: only floating-point weights change type (the export's integer tables stay integers;
// LibTorch's Module::to(dtype) would turn them into bfloat16 and every call would fail, or crash once
// frozen). Scores stay within bfloat16's rounding of float32's, frozen or not, and decode steps run.
TEST(ModelRunnerTest, Bfloat16RunsEveryCallNearFloat32) {
  auto fp32 = LoadTiny(/*threads=*/1, /*shards=*/0, /*packed=*/false);
  ASSERT_NE(fp32, nullptr);
  const int w = fp32->metadata().window;
  std::vector<int32_t> tokens = RandomTokens(3 * w, 7);
  tokens[0] = fp32->metadata().bos_id;
  ASSERT_TRUE(fp32->InitSlots({0}).ok());
  auto want = fp32->ScoreBlocks({ScoreBlocksRow{0, 0, tokens}}, 0);
  ASSERT_TRUE(want.ok()) << want.status();
  for (bool freeze : {false, true}) {
    ModelRunnerOptions o;
    o.model_path = TinyDir() + "/brt.pt";
    o.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
    o.dtype = "bfloat16";
    o.freeze = freeze;
    o.threads = 1;
    o.max_slots = 4;
    auto r = ModelRunner::Create(o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->metadata().dtype, "bfloat16");
    ASSERT_TRUE((*r)->InitSlots({0, 1}).ok());
    auto got = (*r)->ScoreBlocks({ScoreBlocksRow{0, 0, tokens}}, 2);
    ASSERT_TRUE(got.ok()) << "freeze " << freeze << ": " << got.status();
    const auto& a = (*want)[0].target_logprobs;
    const auto& b = (*got)[0].target_logprobs;
    ASSERT_EQ(a.size(), b.size());
    double sum = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(a[i], b[i], 0.25) << "freeze " << freeze << ", position " << i + 1;
      sum += std::abs(a[i] - b[i]);
    }
    EXPECT_LT(sum / static_cast<double>(a.size()), 0.05) << "freeze " << freeze;
    auto step = (*r)->DecodeStep({DecodeRow{1, fp32->metadata().bos_id, 0}});
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_EQ((*step)[0].logprobs.size(), static_cast<size_t>(fp32->metadata().vocab_size));
    auto memory = (*r)->ExportSlot(0);
    ASSERT_TRUE(memory.ok()) << memory.status();
    EXPECT_EQ(memory->kv.dtype, "bfloat16");
  }
}

// Rows whose slots are consecutive (after the runner orders them by slot) are read in place by the
// export's decode_range/finish_range; scattered ones are gathered by decode_slots/finish_slots. Both
// give the same bits: here four sessions in slots 0..3 (given out of order) and their copies in 5, 7, 9,
// 11, over a block and a half, sharded and not.
TEST(ModelRunnerTest, ConsecutiveSlotsReadInPlaceEqualScatteredOnes) {
  for (int shards : {1, 2}) {
    auto r = LoadTiny(/*threads=*/2, shards);
    ASSERT_NE(r, nullptr);
    const int w = r->metadata().window;
    std::vector<std::vector<int32_t>> texts;
    for (uint32_t i = 0; i < 4; ++i) texts.push_back(RandomTokens(2 * w, 60 + i));
    const std::vector<int32_t> together = {2, 0, 3, 1}, scattered = {5, 7, 9, 11};
    ASSERT_TRUE(r->InitSlots({0, 1, 2, 3, 5, 7, 9, 11}).ok());
    for (int t = 0; t < w + w / 2; ++t) {
      std::vector<DecodeRow> a, b;
      for (int i = 0; i < 4; ++i) {
        a.push_back(DecodeRow{together[static_cast<size_t>(i)], texts[static_cast<size_t>(i)][static_cast<size_t>(t)], t});
        b.push_back(DecodeRow{scattered[static_cast<size_t>(i)], texts[static_cast<size_t>(i)][static_cast<size_t>(t)], t});
      }
      auto x = r->DecodeStep(a);
      auto y = r->DecodeStep(b);
      ASSERT_TRUE(x.ok() && y.ok());
      for (int i = 0; i < 4; ++i) {
        ASSERT_EQ((*x)[i].logprobs, (*y)[i].logprobs) << "shards " << shards << " row " << i << " step " << t;
      }
    }
    for (int i = 0; i < 4; ++i) {
      auto x = r->ExportSlot(together[static_cast<size_t>(i)]), y = r->ExportSlot(scattered[static_cast<size_t>(i)]);
      ASSERT_TRUE(x.ok() && y.ok());
      EXPECT_EQ(x->state.data, y->state.data) << "row " << i;
      EXPECT_EQ(x->kv.data, y->kv.data) << "row " << i;
    }
  }
}

TEST(ModelRunnerTest, ExportImportRoundTripsExactly) {
  auto r = LoadTiny();
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->InitSlots({0}).ok());
  DecodeChain(*r, 0, 0, {r->metadata().bos_id, 100, 101});
  auto host = r->ExportSlot(0);
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_EQ(host->kv.shape, (std::vector<int64_t>{1, 2, 2, 2, 16, 16}));
  EXPECT_EQ(host->state.shape, (std::vector<int64_t>{1, 1, 3, 4, 32}));
  ASSERT_TRUE(r->ImportSlot(9, *host).ok());
  EXPECT_EQ(r->ExportSlot(9)->kv.data, host->kv.data);
  // Into buffers that held something else (a recycled checkpoint's): the same bytes, padding zeroed.
  HostMemory reused;
  reused.kv.data.assign(host->kv.data.size(), '\x7f');
  reused.state.data.assign(host->state.data.size() + 9, '\x7f');
  ASSERT_TRUE(r->ExportSlotInto(0, &reused).ok());
  EXPECT_EQ(reused.kv.data, host->kv.data);
  EXPECT_EQ(reused.state.data, host->state.data);
  EXPECT_EQ(reused.kv.shape, host->kv.shape);
  auto a = DecodeChain(*r, 0, 3, {200});
  auto b = DecodeChain(*r, 9, 3, {200});
  EXPECT_EQ(a[0], b[0]);
  HostMemory bad = *host;
  bad.kv.shape[4] = 8;
  EXPECT_THAT(r->ImportSlot(1, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = *host;
  bad.state.dtype = "bfloat16";
  EXPECT_THAT(r->ImportSlot(1, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = *host;
  bad.kv.data.resize(10);
  EXPECT_THAT(r->ImportSlot(1, bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Pools that grow in place (views of reserved address space) keep every slot's memory bitwise, and give
// bitwise the results of pools grown by a copy.
TEST(ModelRunnerTest, PoolsGrowInPlaceKeepingTheirRows) {
  std::vector<std::vector<std::vector<float>>> outs;
  for (PoolGrowth how : {PoolGrowth::kCopy, PoolGrowth::kInPlace}) {
    SCOPED_TRACE(static_cast<int>(how));
    ModelRunnerOptions o;
    o.model_path = TinyDir() + "/brt.pt";
    o.tokenizer_sha256 = testing::TinyTokenizer()->sha256();
    o.threads = 1;
    o.initial_slots = 4;
    o.max_slots = 16;
    o.pool_growth = how;
    auto created = ModelRunner::Create(o);
    ASSERT_TRUE(created.ok()) << created.status();
    ModelRunner& r = **created;
    ASSERT_EQ(r.pool_capacity(), 4);
    ASSERT_EQ(r.pools_in_place(), how != PoolGrowth::kCopy);
    ASSERT_TRUE(r.InitSlots({0, 1, 2, 3}).ok());
    std::vector<std::vector<float>> out;
    for (int32_t slot = 0; slot < 4; ++slot) {
      auto chain = DecodeChain(r, slot, 0, {r.metadata().bos_id, 100 + slot, 7, 40, 41});
      out.insert(out.end(), chain.begin(), chain.end());
    }
    std::vector<HostMemory> before;
    for (int32_t slot = 0; slot < 4; ++slot) before.push_back(*r.ExportSlot(slot));
    ASSERT_TRUE(r.InitSlots({4}).ok());
    EXPECT_EQ(r.pool_capacity(), 8);
    for (int32_t slot = 0; slot < 4; ++slot) {
      auto now = r.ExportSlot(slot);
      ASSERT_TRUE(now.ok()) << now.status();
      EXPECT_EQ(now->kv.data, before[static_cast<size_t>(slot)].kv.data) << "slot " << slot;
      EXPECT_EQ(now->state.data, before[static_cast<size_t>(slot)].state.data) << "slot " << slot;
    }
    // Slot 15 grows the pools at once to 16; a fork into slot 9 (CopySlot) reads and writes in place.
    ASSERT_TRUE(r.InitSlots({15}).ok());
    EXPECT_EQ(r.pool_capacity(), 16);
    ASSERT_TRUE(r.CopySlot(0, 9).ok());
    for (int32_t slot : {0, 4, 9, 15}) {
      auto chain = DecodeChain(r, slot, slot == 0 || slot == 9 ? 5 : 0, {r.metadata().bos_id, 9, 10});
      out.insert(out.end(), chain.begin(), chain.end());
    }
    EXPECT_FALSE(r.InitSlots({16}).ok()) << "max_slots";
    outs.push_back(std::move(out));
  }
  EXPECT_EQ(outs[0], outs[1]);
}

TEST(ModelRunnerTest, ParsePoolGrowthNamesTheChoices) {
  EXPECT_EQ(*ParsePoolGrowth("in_place"), PoolGrowth::kInPlace);
  EXPECT_EQ(*ParsePoolGrowth("copy"), PoolGrowth::kCopy);
  auto bad = ParsePoolGrowth("lazy");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("in_place"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("'lazy'"), std::string::npos) << bad.status();
}

// Spans of different lengths at different offsets, batched (and sharded), ending blocks (the state update
// runs inside FeedSpans), equal the same tokens fed one by one: log-probs, top-k and memory.
TEST(ModelRunnerTest, FeedSpansEqualsDecodeChainAcrossBlocks) {
  for (int shards : {1, 2}) {
    auto r = LoadTiny(/*threads=*/2, shards);
    ASSERT_NE(r, nullptr);
    ASSERT_TRUE(r->SupportsSpans());
    const int w = r->metadata().window;
    const int n = 4 * w;
    std::vector<std::vector<int32_t>> text = {RandomTokens(n, 3), RandomTokens(n, 4), RandomTokens(n, 5)};
    const std::vector<int32_t> span_slots = {6, 1, 3}, chain_slots = {9, 10, 11};
    std::vector<int32_t> all = span_slots;
    all.insert(all.end(), chain_slots.begin(), chain_slots.end());
    ASSERT_TRUE(r->InitSlots(all).ok());
    std::vector<std::vector<std::vector<float>>> chain;
    for (size_t k = 0; k < 3; ++k) chain.push_back(DecodeChain(*r, chain_slots[k], 0, text[k]));
    std::vector<int64_t> pos(3, 0);
    std::mt19937 rng(7 + shards);
    int calls = 0;
    while (pos[0] < n || pos[1] < n || pos[2] < n) {
      std::vector<SpanRow> rows;
      std::vector<size_t> which;
      for (size_t k = 0; k < 3; ++k) {
        if (pos[k] >= n) continue;
        const int64_t room = w - pos[k] % w;
        const int64_t len = 1 + static_cast<int64_t>(rng() % room);
        rows.push_back(SpanRow{span_slots[k], pos[k],
                               std::vector<int32_t>(text[k].begin() + pos[k], text[k].begin() + pos[k] + len)});
        which.push_back(k);
      }
      auto out = r->FeedSpans(rows, 2, /*all_positions=*/true);
      ASSERT_TRUE(out.ok()) << out.status();
      for (size_t j = 0; j < rows.size(); ++j) {
        const size_t k = which[j];
        const SpanResult& res = (*out)[j];
        const size_t len = rows[j].tokens.size();
        ASSERT_EQ(res.target_logprobs.size(), len - 1);
        ASSERT_EQ(res.topk_ids.size(), len * 2);
        for (size_t i = 0; i + 1 < len; ++i) {
          EXPECT_NEAR(chain[k][pos[k] + i][text[k][pos[k] + i + 1]], res.target_logprobs[i], 1e-5);
          EXPECT_NEAR(chain[k][pos[k] + i][res.topk_ids[i * 2]], res.topk_logprobs[i * 2], 1e-5);
        }
        const auto& next = chain[k][pos[k] + len - 1];
        for (size_t v = 0; v < next.size(); v += 97) EXPECT_NEAR(next[v], res.next_logprobs[v], 1e-5);
        pos[k] += static_cast<int64_t>(len);
      }
      ++calls;
    }
    EXPECT_GT(calls, 4);
    for (size_t k = 0; k < 3; ++k) {
      auto a = r->ExportSlot(span_slots[k]), b = r->ExportSlot(chain_slots[k]);
      ASSERT_TRUE(a.ok() && b.ok());
      for (int part = 0; part < 2; ++part) {
        const std::string& x = part == 0 ? a->kv.data : a->state.data;
        const std::string& y = part == 0 ? b->kv.data : b->state.data;
        ASSERT_EQ(x.size(), y.size());
        const float* fx = reinterpret_cast<const float*>(x.data());
        const float* fy = reinterpret_cast<const float*>(y.data());
        for (size_t i = 0; i < x.size() / 4; ++i) ASSERT_NEAR(fx[i], fy[i], 1e-5) << "row " << k << " at " << i;
      }
    }
    // The prompt form: only the next distribution, the same one.
    ASSERT_TRUE(r->InitSlots({12}).ok());
    auto prompt = r->FeedSpans({SpanRow{12, 0, std::vector<int32_t>(text[0].begin(), text[0].begin() + 5)}}, 0,
                               /*all_positions=*/false);
    ASSERT_TRUE(prompt.ok()) << prompt.status();
    EXPECT_TRUE((*prompt)[0].target_logprobs.empty());
    for (size_t v = 0; v < 4096; v += 97) EXPECT_NEAR(chain[0][4][v], (*prompt)[0].next_logprobs[v], 1e-5);
  }
}

// DecodeAndFeedSpans (mixed_slots: decode rows and span rows in one call per shard) equals DecodeStep then
// FeedSpans on a second runner: the decode log-probs, every span output and the memory, over four blocks
// with state updates, unsharded and in 2 shards (a shard then runs decode rows, span rows or both). With
// packed weights (a row's sums do not depend on the row count) bitwise; with ATen's products to 1e-5.
TEST(ModelRunnerTest, MixedCallsEqualADecodeStepAndAFeedSpansCall) {
  for (bool packed : {true, false}) {
    for (int shards : {1, 2}) {
      // The export's own decode step on both sides (mixed calls always run in the export; the C++ decode
      // step is compared with the export's in NativeDecodeStepEqualsTheExports).
      const PackedWeights how = packed ? PackedWeights::kOn : PackedWeights::kOff;
      auto mixed = LoadTinyAs(how, /*threads=*/2, shards, /*freeze=*/true, /*native_decode=*/false);
      auto apart = LoadTinyAs(how, /*threads=*/2, shards, /*freeze=*/true, /*native_decode=*/false);
      ASSERT_NE(mixed, nullptr);
      ASSERT_NE(apart, nullptr);
      ASSERT_TRUE(mixed->SupportsMixedCalls());
      const int w = mixed->metadata().window;
      const int n = 4 * w;
      const std::vector<int32_t> decode_slots = {0, 1, 5}, span_slots = {3, 7};
      std::vector<int32_t> all = decode_slots;
      all.insert(all.end(), span_slots.begin(), span_slots.end());
      std::vector<std::vector<int32_t>> text;
      for (int32_t s : all) text.push_back(RandomTokens(n + 1, 40 + static_cast<uint32_t>(s)));
      ASSERT_TRUE(mixed->InitSlots(all).ok());
      ASSERT_TRUE(apart->InitSlots(all).ok());
      std::vector<int64_t> pos(all.size(), 0);
      std::mt19937 rng(11 + shards);
      auto near = [packed](const std::vector<float>& a, const std::vector<float>& b) {
        if (packed) return a == b;
        if (a.size() != b.size()) return false;
        for (size_t i = 0; i < a.size(); ++i) {
          if (std::abs(a[i] - b[i]) > 1e-5) return false;
        }
        return true;
      };
      int rounds = 0;
      while (pos[3] < n - w && pos[4] < n - w) {
        std::vector<DecodeRow> decode;
        for (size_t k = 0; k < decode_slots.size(); ++k) {
          decode.push_back(DecodeRow{decode_slots[k], text[k][static_cast<size_t>(pos[k])], pos[k]});
        }
        std::vector<SpanRow> spans;
        for (size_t k = decode_slots.size(); k < all.size(); ++k) {
          const int64_t len = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(w - pos[k] % w));
          spans.push_back(SpanRow{all[k], pos[k],
                                  std::vector<int32_t>(text[k].begin() + pos[k], text[k].begin() + pos[k] + len)});
        }
        auto got = mixed->DecodeAndFeedSpans(decode, spans, 2, /*all_positions=*/true);
        ASSERT_TRUE(got.ok()) << got.status();
        auto want_d = apart->DecodeStep(decode);
        auto want_s = apart->FeedSpans(spans, 2, /*all_positions=*/true);
        ASSERT_TRUE(want_d.ok() && want_s.ok());
        ASSERT_EQ(got->decode.size(), decode.size());
        ASSERT_EQ(got->spans.size(), spans.size());
        for (size_t i = 0; i < decode.size(); ++i) {
          EXPECT_TRUE(near(got->decode[i].logprobs, (*want_d)[i].logprobs)) << "decode row " << i;
        }
        for (size_t i = 0; i < spans.size(); ++i) {
          EXPECT_TRUE(near(got->spans[i].target_logprobs, (*want_s)[i].target_logprobs)) << "span row " << i;
          EXPECT_TRUE(near(got->spans[i].topk_logprobs, (*want_s)[i].topk_logprobs)) << "span row " << i;
          EXPECT_TRUE(near(got->spans[i].next_logprobs, (*want_s)[i].next_logprobs)) << "span row " << i;
          if (packed) {
            EXPECT_EQ(got->spans[i].topk_ids, (*want_s)[i].topk_ids);
          }
        }
        for (size_t k = 0; k < decode_slots.size(); ++k) ++pos[k];
        for (size_t k = 0; k < spans.size(); ++k) pos[decode_slots.size() + k] += spans[k].tokens.size();
        ++rounds;
      }
      EXPECT_GT(rounds, 3);
      for (int32_t s : all) {
        auto a = mixed->ExportSlot(s), b = apart->ExportSlot(s);
        ASSERT_TRUE(a.ok() && b.ok());
        for (int part = 0; part < 2; ++part) {
          const std::string& x = part == 0 ? a->kv.data : a->state.data;
          const std::string& y = part == 0 ? b->kv.data : b->state.data;
          ASSERT_EQ(x.size(), y.size());
          if (packed) {
            EXPECT_TRUE(x == y) << "slot " << s << " part " << part << " shards " << shards;
            continue;
          }
          const float* fx = reinterpret_cast<const float*>(x.data());
          const float* fy = reinterpret_cast<const float*>(y.data());
          for (size_t i = 0; i < x.size() / 4; ++i) ASSERT_NEAR(fx[i], fy[i], 1e-5) << "slot " << s << " at " << i;
        }
      }
    }
  }
}

// The C++ decode step (the default on CPU float32) computes the export's decode step to fp32 rounding:
// both kinds of layer, rows at different offsets (after scored blocks, after a span, from the start),
// consecutive and scattered slots, one row alone, across three block ends (whose state updates run in
// the export and read the rings the C++ step wrote), and the memory it leaves.
TEST(ModelRunnerTest, NativeDecodeStepEqualsTheExports) {
  auto native = LoadTinyAs(PackedWeights::kAuto, /*threads=*/2, /*shards=*/2);
  auto exported = LoadTinyAs(PackedWeights::kOff, /*threads=*/1, /*shards=*/1, /*freeze=*/true,
                             /*native_decode=*/false);
  ASSERT_NE(native, nullptr);
  ASSERT_NE(exported, nullptr);
  EXPECT_TRUE(native->native_decode()) << native->native_decode_error();
  EXPECT_FALSE(exported->native_decode());
  EXPECT_TRUE(exported->native_decode_error().empty());
  const int w = native->metadata().window;
  std::vector<std::vector<int32_t>> text;
  for (uint32_t i = 0; i < 6; ++i) text.push_back(RandomTokens(6 * w, 300 + i));
  std::vector<int64_t> pos = {2 * w, 2 * w, 3, 0, 0, 0};
  for (auto* r : {native.get(), exported.get()}) {
    ASSERT_TRUE(r->InitSlots({0, 1, 2, 3, 4, 5}).ok());
    ASSERT_TRUE(r->ScoreBlocks({ScoreBlocksRow{0, 0, {text[0].begin(), text[0].begin() + 2 * w}},
                                ScoreBlocksRow{1, 0, {text[1].begin(), text[1].begin() + 2 * w}}},
                               0)
                    .ok());
    ASSERT_TRUE(r->FeedSpans({SpanRow{2, 0, {text[2].begin(), text[2].begin() + 3}}}, 0, false).ok());
  }
  double worst = 0;
  for (int step = 0; step < 3 * w + 2; ++step) {
    std::vector<DecodeRow> rows;
    if (step % 5 == 4) {
      rows = {DecodeRow{4, text[4][static_cast<size_t>(pos[4])], pos[4]}};  // one row
    } else {
      for (int32_t s : {0, 1, 2, 3}) rows.push_back(DecodeRow{s, text[s][static_cast<size_t>(pos[s])], pos[s]});
      if (step % 2 == 1) rows.push_back(DecodeRow{5, text[5][static_cast<size_t>(pos[5])], pos[5]});  // scattered
    }
    auto a = native->DecodeStep(rows);
    auto b = exported->DecodeStep(rows);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    for (size_t i = 0; i < rows.size(); ++i) {
      ASSERT_EQ((*a)[i].logprobs.size(), (*b)[i].logprobs.size());
      for (size_t v = 0; v < (*b)[i].logprobs.size(); ++v) {
        const double d = std::abs((*a)[i].logprobs[v] - (*b)[i].logprobs[v]);
        worst = std::max(worst, d);
        ASSERT_LT(d, 2e-5) << "slot " << rows[i].slot << " position " << rows[i].position << " token " << v;
      }
      ++pos[static_cast<size_t>(rows[i].slot)];
    }
  }
  EXPECT_GT(worst, 0.0);  // they are two computations, not one called twice
  for (int32_t s = 0; s < 6; ++s) {
    auto x = native->ExportSlot(s), y = exported->ExportSlot(s);
    ASSERT_TRUE(x.ok() && y.ok());
    for (int part = 0; part < 2; ++part) {
      const std::string& p = part == 0 ? x->kv.data : x->state.data;
      const std::string& q = part == 0 ? y->kv.data : y->state.data;
      ASSERT_EQ(p.size(), q.size());
      const float* fp = reinterpret_cast<const float*>(p.data());
      const float* fq = reinterpret_cast<const float*>(q.data());
      for (size_t i = 0; i < p.size() / 4; ++i) ASSERT_NEAR(fp[i], fq[i], 1e-5) << "slot " << s << " part " << part;
    }
  }
  // A bad token is refused before anything is written, as the export refuses it.
  EXPECT_THAT(native->DecodeStep({DecodeRow{0, 99999, pos[0]}}),
              StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("[0, 4096)")));
  auto after = native->ExportSlot(0), before = exported->ExportSlot(0);
  ASSERT_TRUE(after.ok() && before.ok());
  const float* fa = reinterpret_cast<const float*>(after->kv.data.data());
  const float* fb = reinterpret_cast<const float*>(before->kv.data.data());
  for (size_t i = 0; i < after->kv.data.size() / 4; ++i) ASSERT_NEAR(fa[i], fb[i], 1e-5);
}

// With row shards the workers compute each native decode step as one team (decode_team): each product
// split by columns, each row's attention on one member, each state update split by state rows. Bitwise
// what one thread computes, with two and three members, steps of fewer rows than members, rows at
// different offsets, and block ends; and the memory left is bitwise the same.
// ForEachRow (the engine's parallel token draws) runs on several threads whenever there is more than one,
// row shards or not (a CUDA model has none: its draws used to run on the executor alone), and visits every
// row once.
TEST(ModelRunnerTest, ForEachRowSpreadsRowsOverThreadsWithOrWithoutShards) {
  for (int shards : {1, 2}) {
    auto r = LoadTinyAs(PackedWeights::kAuto, /*threads=*/2, shards);
    ASSERT_NE(r, nullptr);
    absl::Mutex mu;
    std::set<std::thread::id> threads;
    std::vector<int> visits(64, 0);
    r->ForEachRow(64, [&](int64_t i) {
      absl::MutexLock lock(&mu);
      threads.insert(std::this_thread::get_id());
      ++visits[static_cast<size_t>(i)];
    });
    EXPECT_EQ(threads.size(), 2u) << "shards " << shards;
    EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u) << "shards " << shards;
    for (int v : visits) EXPECT_EQ(v, 1);
  }
  auto one = LoadTinyAs(PackedWeights::kAuto, /*threads=*/1, /*shards=*/1);
  ASSERT_NE(one, nullptr);
  std::set<std::thread::id> threads;
  one->ForEachRow(8, [&](int64_t) { threads.insert(std::this_thread::get_id()); });
  EXPECT_EQ(threads, std::set<std::thread::id>{std::this_thread::get_id()});
}

TEST(ModelRunnerTest, NativeDecodeTeamIsBitwiseOneThread) {
  auto solo = LoadTinyAs(PackedWeights::kAuto, /*threads=*/1, /*shards=*/1);
  auto two = LoadTinyAs(PackedWeights::kAuto, /*threads=*/2, /*shards=*/2);
  auto three = LoadTinyAs(PackedWeights::kAuto, /*threads=*/3, /*shards=*/3);
  ASSERT_TRUE(solo != nullptr && two != nullptr && three != nullptr);
  EXPECT_FALSE(solo->decode_team());
  EXPECT_TRUE(two->decode_team()) << two->native_decode_error();
  EXPECT_TRUE(three->decode_team()) << three->native_decode_error();
  const int w = solo->metadata().window;
  constexpr int kSlots = 5;
  std::vector<std::vector<int32_t>> text;
  for (uint32_t i = 0; i < kSlots; ++i) text.push_back(RandomTokens(2 * w + 12, 700 + i));
  std::vector<int64_t> pos(kSlots, 0);
  for (auto* r : {solo.get(), two.get(), three.get()}) ASSERT_TRUE(r->InitSlots({0, 1, 2, 3, 4}).ok());
  int block_ends = 0;
  for (int step = 0; step < 2 * w + 12; ++step) {
    std::vector<DecodeRow> rows;
    for (int32_t s = 0; s < kSlots; ++s) {
      // Slot s joins at step 7s (one row, then two: fewer rows than three members); every sixth step
      // decodes slot 0 alone.
      if (step < 7 * s || (step % 6 == 5 && s != 0)) continue;
      rows.push_back(DecodeRow{s, text[static_cast<size_t>(s)][static_cast<size_t>(pos[s])], pos[s]});
    }
    auto a = solo->DecodeStep(rows);
    auto b = two->DecodeStep(rows);
    auto c = three->DecodeStep(rows);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status() << b.status() << c.status();
    for (size_t i = 0; i < rows.size(); ++i) {
      ASSERT_EQ((*a)[i].logprobs, (*b)[i].logprobs) << "two members, step " << step << " slot " << rows[i].slot;
      ASSERT_EQ((*a)[i].logprobs, (*c)[i].logprobs) << "three members, step " << step << " slot " << rows[i].slot;
      if (pos[rows[i].slot] % w == w - 1) ++block_ends;
      ++pos[static_cast<size_t>(rows[i].slot)];
    }
  }
  EXPECT_GT(block_ends, kSlots);
  for (int32_t s = 0; s < kSlots; ++s) {
    auto x = solo->ExportSlot(s), y = two->ExportSlot(s), z = three->ExportSlot(s);
    ASSERT_TRUE(x.ok() && y.ok() && z.ok());
    EXPECT_TRUE(x->kv.data == y->kv.data && x->state.data == y->state.data) << "two members, slot " << s;
    EXPECT_TRUE(x->kv.data == z->kv.data && x->state.data == z->state.data) << "three members, slot " << s;
  }
}

// Prompts' spans through the native decoder (native_spans): a span's tokens as consecutive rows of one
// call, alone (FeedSpans) or with decode rows (DecodeAndFeedSpans), equal the export's span_slots and
// mixed_slots to fp32 rounding (next-token distributions and the memory left), over spans of every length
// up to a whole block, block ends included; on a team of two, bitwise what one thread computes.
TEST(ModelRunnerTest, NativeSpansFeedAsTheExportsSpans) {
  auto team = LoadTinyAs(PackedWeights::kAuto, /*threads=*/2, /*shards=*/2);
  auto solo = LoadTinyAs(PackedWeights::kAuto, /*threads=*/1, /*shards=*/1);
  auto exported = LoadTinyAs(PackedWeights::kOff, /*threads=*/1, /*shards=*/1, /*freeze=*/true,
                             /*native_decode=*/false);
  ASSERT_TRUE(team != nullptr && solo != nullptr && exported != nullptr);
  ASSERT_TRUE(team->decode_team());
  const int w = team->metadata().window;
  constexpr int kSlots = 4;
  std::vector<std::vector<int32_t>> text;
  for (uint32_t i = 0; i < kSlots; ++i) text.push_back(RandomTokens(6 * w, 900 + i));
  std::vector<int64_t> pos(kSlots, 0);
  for (auto* r : {team.get(), solo.get(), exported.get()}) ASSERT_TRUE(r->InitSlots({0, 1, 2, 3}).ok());
  std::mt19937 rng(5);
  double worst = 0;
  auto near = [&worst](const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = std::abs(a[i] - b[i]);
      worst = std::max(worst, d);
      ASSERT_LT(d, 2e-5) << what << " at " << i;
    }
  };
  int calls = 0, block_ends = 0;
  while (*std::max_element(pos.begin(), pos.begin() + 3) < 4 * w) {
    // Slots 0-2 feed spans (1 token up to the rest of the block, so spans end blocks), slot 3 decodes;
    // every other call mixes them.
    std::vector<SpanRow> spans;
    for (int32_t s = 0; s < 3; ++s) {
      const int64_t room = w - pos[s] % w;
      const int64_t len = (calls % 5 == 4) ? room : 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(room));
      spans.push_back(SpanRow{s, pos[s], {text[s].begin() + pos[s], text[s].begin() + pos[s] + len}});
    }
    std::vector<DecodeRow> decode = {DecodeRow{3, text[3][static_cast<size_t>(pos[3])], pos[3]}};
    const bool mixed = calls % 2 == 1;
    std::vector<std::vector<float>> got[3];  // per runner: span distributions, then the decode row's
    std::unique_ptr<ModelRunner>* runners[3] = {&team, &solo, &exported};
    for (int k = 0; k < 3; ++k) {
      ModelRunner& r = **runners[k];
      if (mixed) {
        auto out = r.DecodeAndFeedSpans(decode, spans, 0, /*all_positions=*/false);
        ASSERT_TRUE(out.ok()) << "runner " << k << " call " << calls << ": " << out.status();
        for (auto& sr : out->spans) got[k].push_back(sr.next_logprobs);
        got[k].push_back(out->decode[0].logprobs);
      } else {
        auto out = r.FeedSpans(spans, 0, /*all_positions=*/false);
        ASSERT_TRUE(out.ok()) << out.status();
        for (auto& sr : *out) got[k].push_back(sr.next_logprobs);
      }
    }
    for (size_t i = 0; i < got[2].size(); ++i) {
      ASSERT_EQ(got[0][i], got[1][i]) << "team vs one thread, call " << calls << " row " << i;
      near(got[0][i], got[2][i], "native vs export, call " + std::to_string(calls) + " row " + std::to_string(i));
    }
    for (size_t k = 0; k < spans.size(); ++k) {
      pos[k] += static_cast<int64_t>(spans[k].tokens.size());
      if (pos[k] % w == 0) ++block_ends;
    }
    if (mixed) ++pos[3];
    ++calls;
  }
  EXPECT_GT(block_ends, 3);
  EXPECT_GT(worst, 0.0);  // two computations
  for (int32_t s = 0; s < kSlots; ++s) {
    auto a = team->ExportSlot(s), b = solo->ExportSlot(s), c = exported->ExportSlot(s);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_TRUE(a->kv.data == b->kv.data && a->state.data == b->state.data) << "slot " << s;
    for (int part = 0; part < 2; ++part) {
      const std::string& x = part == 0 ? a->kv.data : a->state.data;
      const std::string& y = part == 0 ? c->kv.data : c->state.data;
      ASSERT_EQ(x.size(), y.size());
      const float* fx = reinterpret_cast<const float*>(x.data());
      const float* fy = reinterpret_cast<const float*>(y.data());
      for (size_t i = 0; i < x.size() / 4; ++i) ASSERT_NEAR(fx[i], fy[i], 1e-5) << "slot " << s << " part " << part;
    }
  }
}

TEST(ModelRunnerTest, BadShapesAndSlotsAreErrorsNotCrashes) {
  auto r = LoadTiny();
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->InitSlots({0}).ok());
  EXPECT_THAT(r->ScoreBlocks({ScoreBlocksRow{0, 0, {1, 2, 3}}}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r->ScoreBlocks({ScoreBlocksRow{0, 3, std::vector<int32_t>(8, 5)}}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("boundary")));
  EXPECT_THAT(r->DecodeStep({DecodeRow{0, 99999, 0}}), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(r->DecodeStep({DecodeRow{16, 5, 0}}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("slot 16")));
  EXPECT_THAT(r->InitSlots({-1}), StatusIs(absl::StatusCode::kInvalidArgument));
  // A span that crosses its block's end, an empty one, a bad slot.
  EXPECT_THAT(r->FeedSpans({SpanRow{0, 6, {5, 6, 7}}}, 0, false),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("one block of W=8")));
  EXPECT_THAT(r->FeedSpans({SpanRow{0, 0, {}}}, 0, false), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r->FeedSpans({SpanRow{16, 0, {5}}}, 0, false),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("slot 16")));
  EXPECT_THAT(r->FeedSpans({}, 0, false), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace brt
