// brt-decode-step-bench: the model's decode step alone (ModelRunner::DecodeStep, no engine, no RPC), with
// the server's C++ decode step (--native_decode, --decode_team) against the export's TorchScript one (or,
// --baseline=shards, against the C++ step run by shard workers that each decode their own rows; or,
// --baseline=avx2, against the same C++ step with its kernels capped at AVX2), side by side in one process: the same rows, the two runners alternating, several rounds, medians.
//
//   build/bin/brt-decode-step-bench --model_dir=model/artifacts --rows=1,8,16,32 --steps=200 --rounds=3
//
// Prints one JSON object: per row count, milliseconds per step for each runner (median over rounds), their
// ratio, and the native step's median and 99th-percentile step over every timed step (with --in_phase the
// steps where every row completes a block, and runs the state update, are the slow 1/W of them). Rows sit
// in consecutive slots at positions spread over a block, so some steps complete a block (and run the
// export's state update), as in serving.
#include <algorithm>
#include <cstddef>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "server/model/model_runner.h"
#include "server/model/panel_matrix.h"
#include "server/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model_dir, "model/artifacts", "Directory with brt.pt and tokenizer.model");
ABSL_FLAG(std::string, shim, "build/lib/libbrt_spm_shim.so", "The SentencePiece shim library");
ABSL_FLAG(int, threads, 2, "Intra-op threads = row shards (brt-server --threads)");
ABSL_FLAG(std::string, rows, "1,8,16,32", "Rows per decode step to measure");
ABSL_FLAG(int, steps, 200, "Decode steps per measurement");
ABSL_FLAG(int, rounds, 3, "Alternating rounds (the median is reported)");
ABSL_FLAG(bool, in_phase, false,
          "All rows at the same position (every row completes its block in the same step, as sessions "
          "started together do); default: positions spread over a block");
ABSL_FLAG(bool, native_only, false, "Time only the C++ decode step (for a profiler); the baseline shows 0");
ABSL_FLAG(std::string, baseline, "export",
          "What the native step (as the server runs it: --decode_team) is compared with: export (the "
          "export's TorchScript step) or shards (the native step with --decode_team=false: each shard "
          "worker decodes its own rows) or avx2 (the same native step with its kernels capped at AVX2, "
          "against the best this CPU has)");
ABSL_FLAG(std::string, native_simd, "auto", "brt-server --native_simd (auto, avx512, avx2, portable)");

namespace {

std::unique_ptr<brt::ModelRunner> Load(const std::string& dir, const std::string& sha, bool native, bool team) {
  brt::ModelRunnerOptions ro;
  ro.model_path = dir + "/brt.pt";
  ro.tokenizer_sha256 = sha;
  ro.threads = absl::GetFlag(FLAGS_threads);
  ro.native_decode = native;
  ro.decode_team = team;
  ro.max_slots = 256;
  ro.native_simd = brt::SimdLevel::kAvx512;  // main caps it per runner (LimitSimd) before each run
  auto r = brt::ModelRunner::Create(ro);
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    return nullptr;
  }
  if (native && !(*r)->native_decode()) {
    std::fprintf(stderr, "no native decode step: %s\n", (*r)->native_decode_error().c_str());
    return nullptr;
  }
  return *std::move(r);
}

// Seconds for `steps` decode steps of `rows` rows, continuing each row's document from *pos; every step's
// seconds appended to *each.
double Time(brt::ModelRunner& r, int rows, int steps, std::vector<int64_t>* pos,
            std::vector<double>* each = nullptr) {
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  for (int s = 0; s < steps; ++s) {
    std::vector<brt::DecodeRow> batch;
    for (int i = 0; i < rows; ++i) {
      const int64_t p = (*pos)[static_cast<size_t>(i)]++;
      batch.push_back(brt::DecodeRow{i, static_cast<int32_t>(5 + (p * 7919 + i * 104729) % 4000), p});
    }
    auto out = r.DecodeStep(batch);
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      std::exit(1);
    }
    const auto now = std::chrono::steady_clock::now();
    if (each != nullptr) each->push_back(std::chrono::duration<double>(now - last).count());
    last = now;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_model_dir);
  auto tok = brt::Tokenizer::Create(dir + "/tokenizer.model", absl::GetFlag(FLAGS_shim));
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  const std::string baseline = absl::GetFlag(FLAGS_baseline);
  if (baseline != "export" && baseline != "shards" && baseline != "avx2") {
    std::fprintf(stderr, "--baseline: %s is none of export, shards, avx2\n", baseline.c_str());
    return 1;
  }
  auto parsed = brt::ParseNativeSimd(absl::GetFlag(FLAGS_native_simd));
  if (!parsed.ok()) {
    std::fprintf(stderr, "%s\n", parsed.status().ToString().c_str());
    return 1;
  }
  const brt::SimdLevel simd = *parsed;
  // The level each runner's steps run with (the baseline's: AVX2 for --baseline=avx2).
  const brt::SimdLevel levels[2] = {baseline == "avx2" ? std::min(simd, brt::SimdLevel::kAvx2) : simd, simd};
  std::unique_ptr<brt::ModelRunner> runners[2] = {
      Load(dir, (*tok)->sha256(), baseline != "export", baseline == "avx2"), Load(dir, (*tok)->sha256(), true, true)};
  if (!runners[0] || !runners[1]) return 1;
  const int steps = absl::GetFlag(FLAGS_steps), rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const int w = runners[0]->metadata().window;
  std::printf("{\"command_flags\": {\"threads\": %d, \"steps\": %d, \"rounds\": %d, \"baseline\": \"%s\", "
              "\"decode_team\": %s, \"native_simd\": \"%s\", \"cpu_simd\": \"%s\"}, \"results\": [",
              absl::GetFlag(FLAGS_threads), steps, rounds, baseline.c_str(),
              runners[1]->decode_team() ? "true" : "false", brt::SimdLevelName(simd),
              brt::SimdLevelName(brt::DetectedSimd()));
  bool first_row = true;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_rows), ',', absl::SkipEmpty())) {
    int rows = 0;
    if (!absl::SimpleAtoi(part, &rows) || rows < 1 || rows > 256) {
      std::fprintf(stderr, "--rows: %s is not a row count in [1, 256]\n", std::string(part).c_str());
      return 1;
    }
    std::vector<double> ms[2], worst[2], steps_s[2];
    for (int k = 0; k < 2; ++k) {
      std::vector<int32_t> slots;
      for (int i = 0; i < rows; ++i) slots.push_back(i);
      if (!runners[k]->InitSlots(slots).ok()) return 1;
    }
    std::vector<int64_t> pos[2];
    for (int k = 0; k < 2; ++k) {
      for (int i = 0; i < rows; ++i) pos[k].push_back(absl::GetFlag(FLAGS_in_phase) ? 0 : (i * w) / rows);
      brt::LimitSimd(levels[k]);
      if (k == 1 || !absl::GetFlag(FLAGS_native_only)) Time(*runners[k], rows, 8, &pos[k]);  // warm-up
    }
    for (int round = 0; round < rounds; ++round) {
      for (int j = 0; j < 2; ++j) {
        const int k = (round + j) % 2;  // alternate which goes first
        if (k == 0 && absl::GetFlag(FLAGS_native_only)) {
          ms[k].push_back(0.0);
          worst[k].push_back(0.0);
          continue;
        }
        brt::LimitSimd(levels[k]);
        const size_t from = steps_s[k].size();
        ms[k].push_back(1000.0 * Time(*runners[k], rows, steps, &pos[k], &steps_s[k]) / steps);
        worst[k].push_back(1000.0 * *std::max_element(steps_s[k].begin() + static_cast<std::ptrdiff_t>(from),
                                                       steps_s[k].end()));
      }
    }
    const double ts = Median(ms[0]), native = Median(ms[1]);
    const char* b = baseline.c_str();
    // The native step's time over every timed step of every round: median and 99th percentile (the
    // steps that also complete a block, and so run the state update, show here).
    std::sort(steps_s[1].begin(), steps_s[1].end());
    const double step_p50 = steps_s[1].empty() ? 0.0 : 1000.0 * steps_s[1][steps_s[1].size() / 2];
    const double step_p99 = steps_s[1].empty() ? 0.0 : 1000.0 * steps_s[1][steps_s[1].size() * 99 / 100];
    std::printf("%s{\"rows\": %d, \"%s_ms_per_step\": %.4f, \"native_ms_per_step\": %.4f, "
                "\"%s_over_native\": %.3f, \"%s_slowest_step_ms\": %.3f, \"native_slowest_step_ms\": %.3f, "
                "\"native_step_p50_ms\": %.3f, \"native_step_p99_ms\": %.3f}",
                first_row ? "" : ", ", rows, b, ts, native, b, ts / native, b, Median(worst[0]), Median(worst[1]),
                step_p50, step_p99);
    first_row = false;
    std::fflush(stdout);
  }
  std::printf("]}\n");
  return 0;
}
