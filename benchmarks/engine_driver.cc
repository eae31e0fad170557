// brt-engine-bench: drives the server core in-process (Tokenizer + ModelRunner + Engine, no gRPC), so
// the same scheduling and model code that brt-server runs can be measured where gRPC is absent (a GPU
// machine) and compared with the gRPC server on the same machine (the RPC layer's cost).
//
//   build/bin/brt-engine-bench --model_dir=model/artifacts --text=FILE --device=cpu --threads=2
//       --score_sessions=1,8 --generate_sessions=1,32 --generate_tokens=64   (one line)
//
// Prints one JSON object: per setting, tokens/s (score: text tokens scored; generate: tokens generated,
// all sessions together) and, for generation, inter-token gaps (p50, p99) as the sinks saw them.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/core/engine.h"
#include "server/model/model_runner.h"
#include "server/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model_dir, "model/artifacts", "Directory with brt.pt and tokenizer.model");
ABSL_FLAG(std::string, shim, "build/lib/libbrt_spm_shim.so", "The SentencePiece shim library");
ABSL_FLAG(std::string, text, "", "Text file to score (each session scores its own slice)");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda:N");
ABSL_FLAG(std::string, dtype, "float32", "float32, bfloat16 or float16");
ABSL_FLAG(int, threads, 2, "Intra-op threads (block scoring)");
ABSL_FLAG(int, decode_threads, 0, "Intra-op threads for decode steps (row shards off); 0 = --threads");
ABSL_FLAG(int, row_shards, 0, "Row shards of batched CPU calls (brt-server --row_shards); 0 = --threads");
ABSL_FLAG(int, row_shard_min_rows, 2, "brt-server --row_shard_min_rows");
ABSL_FLAG(bool, jit_optimize, false, "TorchScript's profiling executor");
ABSL_FLAG(std::string, score_sessions, "1,8", "Concurrent Score sessions to measure");
ABSL_FLAG(std::string, generate_sessions, "1,32", "Concurrent Generate sessions to measure");
ABSL_FLAG(int, score_bytes, 60000, "Bytes of text each Score session reads");
ABSL_FLAG(int, generate_tokens, 64, "Tokens each Generate session produces");
ABSL_FLAG(double, generate_temperature, 0, "Generate's temperature (0 = greedy); seeds are 1..sessions");
ABSL_FLAG(double, generate_top_p, 1, "Generate's top_p");
ABSL_FLAG(int, generate_stagger, 0,
          "Before Generate, session i reads i * N newline tokens (untimed), so the sessions sit at different "
          "offsets in their blocks and complete blocks in different steps (bench_engine.py's staggered run)");
ABSL_FLAG(double, generate_arrival_ms, 0,
          "Session i starts its Generate call i * this many ms after the first (arrivals while others generate; "
          "0 = all at once)");
ABSL_FLAG(bool, dump_gaps, false,
          "Print every Generate inter-token gap to stderr (session, token index, time since start, gap)");
ABSL_FLAG(int, generate_prompt_repeat, 1, "Each Generate prompt is its phrase this many times (~10 tokens each)");
ABSL_FLAG(int, max_batch_size, 8, "Engine --max_batch_size");
ABSL_FLAG(int, max_blocks_per_call, 2, "brt-server --max_blocks_per_call");
ABSL_FLAG(int, max_decode_batch, 256, "Engine --max_decode_batch");
ABSL_FLAG(int, max_block_ends_per_step, 8, "brt-server --max_block_ends_per_step");
ABSL_FLAG(int, decode_rows_per_block_end, 16, "brt-server --decode_rows_per_block_end");
ABSL_FLAG(int, chunked_prefill_tokens, 0, "brt-server --chunked_prefill_tokens");
ABSL_FLAG(bool, mixed_batches, true, "brt-server --mixed_batches");
ABSL_FLAG(uint64_t, checkpoint_prefill_mb, 64, "brt-server --checkpoint_prefill_mb");
ABSL_FLAG(int, initial_session_slots, 64, "brt-server --initial_session_slots");
ABSL_FLAG(std::string, pool_growth, "in_place", "brt-server --pool_growth (in_place, copy)");
ABSL_FLAG(bool, feed_spans, true, "brt-server --feed_spans");
ABSL_FLAG(std::string, cpu_packed_weights, "auto", "brt-server --cpu_packed_weights (auto, true, transposed, false)");
ABSL_FLAG(bool, freeze_model, true, "brt-server --freeze_model");
ABSL_FLAG(bool, native_decode, true, "brt-server --native_decode");
ABSL_FLAG(bool, decode_team, true, "brt-server --decode_team");
ABSL_FLAG(bool, native_spans, true, "brt-server --native_spans");
ABSL_FLAG(std::string, native_simd, "auto", "brt-server --native_simd (auto, avx512, avx2, portable)");
ABSL_FLAG(std::string, pin_workers, "auto", "brt-server --pin_workers (auto, on, off)");

namespace {

using Clock = std::chrono::steady_clock;

class CountingScoreSink : public brt::ScoreSink {
 public:
  void OnTokens(std::vector<brt::TokenScoreResult>) override {}
  void OnInputReady() override {
    absl::MutexLock lock(&mu_);
    ready_ = true;
  }
  void OnFinish(absl::StatusOr<brt::ScoreSummaryResult> s) override {
    if (s.ok()) tokens = s->tokens;
    else std::fprintf(stderr, "score failed: %s\n", s.status().ToString().c_str());
    done.Notify();
  }
  void WaitReady() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&ready_));
    ready_ = false;
  }
  uint64_t tokens = 0;
  absl::Notification done;

 private:
  absl::Mutex mu_;
  bool ready_ = false;
};

class TimingGenerateSink : public brt::GenerateSink {
 public:
  void OnToken(brt::GeneratedToken) override { times.push_back(Clock::now()); }
  void OnFinish(absl::StatusOr<brt::GenerateSummary> s) override {
    if (!s.ok()) std::fprintf(stderr, "generate failed: %s\n", s.status().ToString().c_str());
    done.Notify();
  }
  std::vector<Clock::time_point> times;  // executor thread only until done
  absl::Notification done;
};

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

std::vector<int> ParseList(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int v;
    if (absl::SimpleAtoi(part, &v) && v > 0) out.push_back(v);
  }
  return out;
}

std::string MeasureScore(brt::Engine& engine, const std::string& text, int sessions, int bytes) {
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<CountingScoreSink>> sinks;
  std::vector<std::unique_ptr<brt::ScoreCall>> calls;
  for (int i = 0; i < sessions; ++i) ids.push_back(engine.CreateSession("bench", {})->id);
  const auto t0 = Clock::now();
  std::vector<std::thread> feeders;
  for (int i = 0; i < sessions; ++i) {
    sinks.push_back(std::make_unique<CountingScoreSink>());
    calls.push_back(*engine.StartScore(ids[i], brt::ScoreOptions{0, true, absl::InfiniteFuture()},
                                       sinks.back().get()));
  }
  for (int i = 0; i < sessions; ++i) {
    feeders.emplace_back([&, i] {
      const size_t begin = (static_cast<size_t>(i) * bytes) % std::max<size_t>(1, text.size() - bytes);
      const std::string slice = text.substr(begin, bytes);
      for (size_t at = 0; at < slice.size(); at += 16384) {
        auto more = calls[i]->Append(std::string_view(slice).substr(at, 16384));
        if (more.ok() && !*more) sinks[i]->WaitReady();
      }
      (void)calls[i]->CloseInput();
    });
  }
  uint64_t tokens = 0;
  for (int i = 0; i < sessions; ++i) {
    feeders[i].join();
    sinks[i]->done.WaitForNotification();
    tokens += sinks[i]->tokens;
  }
  const double secs = Seconds(t0, Clock::now());
  for (const auto& id : ids) (void)engine.DeleteSession(id);
  std::ostringstream out;
  out << "{\"sessions\": " << sessions << ", \"tokens\": " << tokens << ", \"seconds\": " << secs
      << ", \"tokens_per_s\": " << tokens / secs << "}";
  return out.str();
}

std::string MeasureGenerate(brt::Engine& engine, int sessions, int max_tokens) {
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<TimingGenerateSink>> sinks;
  std::vector<std::unique_ptr<brt::GenerateCall>> calls;
  for (int i = 0; i < sessions; ++i) ids.push_back(engine.CreateSession("bench", {})->id);
  const int stagger = absl::GetFlag(FLAGS_generate_stagger);
  for (int i = 1; stagger > 0 && i < sessions; ++i) {
    CountingScoreSink sink;
    auto call = engine.StartScore(ids[i], brt::ScoreOptions{0, true, absl::InfiniteFuture()}, &sink);
    if (!call.ok()) continue;
    (void)(*call)->Append(std::string(static_cast<size_t>(i * stagger), '\n'));
    (void)(*call)->CloseInput();
    sink.done.WaitForNotification();
  }
  const auto t0 = Clock::now();
  const double arrival_ms = absl::GetFlag(FLAGS_generate_arrival_ms);
  for (int i = 0; i < sessions; ++i) {
    if (arrival_ms > 0) {
      std::this_thread::sleep_until(t0 + std::chrono::microseconds(static_cast<int64_t>(i * arrival_ms * 1000)));
    }
    brt::GenerateParams p;
    for (int k = 0; k < std::max(1, absl::GetFlag(FLAGS_generate_prompt_repeat)); ++k) {
      p.prompt += (k > 0 ? ", a" : "A") + std::string("nd it came to pass in the ") + std::to_string(i + 1) + " year";
    }
    p.max_tokens = max_tokens;
    p.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_generate_temperature));
    p.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_generate_top_p));
    p.sampling.seed = static_cast<uint64_t>(i + 1);
    sinks.push_back(std::make_unique<TimingGenerateSink>());
    calls.push_back(*engine.StartGenerate(ids[i], p, sinks.back().get()));
  }
  uint64_t tokens = 0;
  std::vector<double> gaps;
  for (auto& s : sinks) {
    s->done.WaitForNotification();
    tokens += s->times.size();
    for (size_t k = 1; k < s->times.size(); ++k) gaps.push_back(Seconds(s->times[k - 1], s->times[k]));
  }
  if (absl::GetFlag(FLAGS_dump_gaps)) {
    for (size_t si = 0; si < sinks.size(); ++si) {
      auto& s = sinks[si];
      for (size_t k = 1; k < s->times.size(); ++k) {
        std::fprintf(stderr, "gap session %zu token %zu at_ms %.1f gap_ms %.1f\n", si, k,
                     1e3 * Seconds(t0, s->times[k]), 1e3 * Seconds(s->times[k - 1], s->times[k]));
      }
    }
  }
  const double secs = Seconds(t0, Clock::now());
  for (const auto& id : ids) (void)engine.DeleteSession(id);
  std::ostringstream out;
  out << "{\"sessions\": " << sessions << ", \"tokens\": " << tokens << ", \"seconds\": " << secs
      << ", \"tokens_per_s\": " << tokens / secs << ", \"gap_p50_ms\": " << 1e3 * Percentile(gaps, 0.5)
      << ", \"gap_p90_ms\": " << 1e3 * Percentile(gaps, 0.9) << ", \"gap_p99_ms\": " << 1e3 * Percentile(gaps, 0.99)
      << ", \"gap_max_ms\": " << 1e3 * Percentile(gaps, 1.0) << "}";
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  // glibc serves large blocks with mmap and returns them on free, so the model's per-step temporaries
  // (megabytes at batch 8-64) were page-faulted afresh on every step: measured 5-7x slower steps. Keep
  // such blocks in the heap instead (the heap then stays at its peak, which the pools bound anyway).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  absl::ParseCommandLine(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_model_dir);
  auto tok = brt::Tokenizer::Create(dir + "/tokenizer.model", absl::GetFlag(FLAGS_shim));
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  brt::ModelRunnerOptions ro;
  ro.model_path = dir + "/brt.pt";
  ro.tokenizer_sha256 = (*tok)->sha256();
  ro.device = absl::GetFlag(FLAGS_device);
  ro.dtype = absl::GetFlag(FLAGS_dtype);
  ro.threads = absl::GetFlag(FLAGS_threads);
  ro.decode_threads = absl::GetFlag(FLAGS_decode_threads);
  ro.shards = absl::GetFlag(FLAGS_row_shards);
  ro.shard_min_rows = absl::GetFlag(FLAGS_row_shard_min_rows);
  ro.jit_optimize = absl::GetFlag(FLAGS_jit_optimize);
  ro.initial_slots = absl::GetFlag(FLAGS_initial_session_slots);
  auto pool_growth = brt::ParsePoolGrowth(absl::GetFlag(FLAGS_pool_growth));
  if (!pool_growth.ok()) {
    std::fprintf(stderr, "%s\n", pool_growth.status().ToString().c_str());
    return 1;
  }
  ro.pool_growth = *pool_growth;
  auto packed = brt::ParsePackedWeights(absl::GetFlag(FLAGS_cpu_packed_weights));
  if (!packed.ok()) {
    std::fprintf(stderr, "%s\n", packed.status().ToString().c_str());
    return 1;
  }
  ro.cpu_packed_weights = *packed;
  ro.freeze = absl::GetFlag(FLAGS_freeze_model);
  ro.native_decode = absl::GetFlag(FLAGS_native_decode);
  ro.decode_team = absl::GetFlag(FLAGS_decode_team);
  ro.native_spans = absl::GetFlag(FLAGS_native_spans);
  auto simd = brt::ParseNativeSimd(absl::GetFlag(FLAGS_native_simd));
  if (!simd.ok()) {
    std::fprintf(stderr, "%s\n", simd.status().ToString().c_str());
    return 1;
  }
  ro.native_simd = *simd;
  auto pin = brt::ParsePinWorkers(absl::GetFlag(FLAGS_pin_workers));
  if (!pin.ok()) {
    std::fprintf(stderr, "%s\n", pin.status().ToString().c_str());
    return 1;
  }
  ro.pin_workers = *pin;
  ro.max_slots = 1024;
  auto runner = brt::ModelRunner::Create(ro);
  if (!runner.ok()) {
    std::fprintf(stderr, "%s\n", runner.status().ToString().c_str());
    return 1;
  }
  if (ro.native_decode && !(*runner)->native_decode()) {
    std::fprintf(stderr, "--native_decode: the export's decode step runs: %s\n",
                 (*runner)->native_decode_error().c_str());
  }
  const std::vector<int> pinned_cpus = (*runner)->pinned_cpus();
  brt::EngineOptions eo;
  eo.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  eo.max_decode_batch = absl::GetFlag(FLAGS_max_decode_batch);
  eo.max_blocks_per_call = static_cast<uint32_t>(absl::GetFlag(FLAGS_max_blocks_per_call));
  eo.max_block_ends_per_step = static_cast<uint32_t>(absl::GetFlag(FLAGS_max_block_ends_per_step));
  eo.decode_rows_per_block_end = static_cast<uint32_t>(absl::GetFlag(FLAGS_decode_rows_per_block_end));
  eo.chunked_prefill_tokens = static_cast<uint32_t>(absl::GetFlag(FLAGS_chunked_prefill_tokens));
  eo.feed_spans = absl::GetFlag(FLAGS_feed_spans);
  eo.mixed_batches = absl::GetFlag(FLAGS_mixed_batches);
  eo.max_queue = 1024;
  eo.checkpoint_prefill_bytes = absl::GetFlag(FLAGS_checkpoint_prefill_mb) << 20;
  auto engine = brt::Engine::Create(eo, *std::move(runner),
                                    std::shared_ptr<const brt::Tokenizer>(*std::move(tok)));
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }
  std::string text;
  if (!absl::GetFlag(FLAGS_text).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_text), std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::printf("{\"device\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, \"native_simd\": \"%s\", "
              "\"pinned_cpus\": \"%s\"",
              ro.device.c_str(), ro.dtype.c_str(), ro.threads, brt::SimdLevelName(brt::ActiveSimd()),
              brt::CpuList(pinned_cpus).c_str());
  if (!text.empty()) {
    const int bytes = std::min<int>(absl::GetFlag(FLAGS_score_bytes), static_cast<int>(text.size()));
    std::printf(", \"score\": [");
    bool first = true;
    for (int n : ParseList(absl::GetFlag(FLAGS_score_sessions))) {
      std::printf("%s%s", first ? "" : ", ", MeasureScore(**engine, text, n, bytes).c_str());
      std::fflush(stdout);
      first = false;
    }
    std::printf("]");
  }
  std::printf(", \"generate\": [");
  bool first = true;
  for (int n : ParseList(absl::GetFlag(FLAGS_generate_sessions))) {
    std::printf("%s%s", first ? "" : ", ",
                MeasureGenerate(**engine, n, absl::GetFlag(FLAGS_generate_tokens)).c_str());
    std::fflush(stdout);
    first = false;
  }
  std::printf("]}\n");
  return 0;
}
