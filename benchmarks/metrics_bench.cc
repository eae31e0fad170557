// Per-call cost of the metrics facade's hot-path methods (Google Benchmark). See README-metrics.md
// for the command and recorded figures. Build with -DBRT_BUILD_BENCHMARKS=ON; binary:
// build/bin/brt-metrics-bench.
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_exposer.h"
#include "server/metrics/process_collector.h"

namespace {

using brt::metrics::BatchKind;
using brt::metrics::Metrics;

// One facade shared by all threads of a benchmark, as in the server.
Metrics& SharedMetrics() {
  static auto* registry =
      new std::shared_ptr<prometheus::Registry>(std::make_shared<prometheus::Registry>());
  static Metrics* metrics = Metrics::Create(*registry).value().release();
  return *metrics;
}

// Latency-like values spread over the buckets, so Observe's bucket search is not always the first.
std::vector<double> LatencySamples() {
  std::mt19937 rng(7);
  std::lognormal_distribution<double> d(-5.0, 1.5);  // median ~7 ms
  std::vector<double> v(1024);
  for (double& x : v) x = d(rng);
  return v;
}

// ---- the library primitives, for reference
// ---------------------------------------------------------------
void BM_PrometheusCounterIncrement(benchmark::State& state) {
  prometheus::Registry registry;
  auto& c = prometheus::BuildCounter().Name("c_total").Help("h").Register(registry).Add({});
  for (auto _ : state) c.Increment(3);
}
BENCHMARK(BM_PrometheusCounterIncrement);

void BM_PrometheusHistogramObserve17Buckets(benchmark::State& state) {
  prometheus::Registry registry;
  auto& h = prometheus::BuildHistogram()
                .Name("h_seconds")
                .Help("h")
                .Register(registry)
                .Add({}, brt::metrics::kLatencyBuckets);
  const auto samples = LatencySamples();
  size_t i = 0;
  for (auto _ : state) h.Observe(samples[i++ & 1023]);
}
BENCHMARK(BM_PrometheusHistogramObserve17Buckets);

// What the facade avoids on the hot path: resolving labels on every call (hash + family mutex).
void BM_PrometheusFamilyAddPerCall(benchmark::State& state) {
  prometheus::Registry registry;
  auto& family = prometheus::BuildCounter().Name("c_total").Help("h").Register(registry);
  for (auto _ : state) family.Add({{"kind", "decode"}}).Increment();
}
BENCHMARK(BM_PrometheusFamilyAddPerCall);

// ---- facade hot path (labels resolved in Create)
// -----------------------------------------------------------
void BM_AddScoredTokens(benchmark::State& state) {
  Metrics& m = SharedMetrics();
  for (auto _ : state) m.AddScoredTokens(64);
}
BENCHMARK(BM_AddScoredTokens)->Threads(1)->Threads(2);

void BM_AddGeneratedTokens(benchmark::State& state) {
  Metrics& m = SharedMetrics();
  for (auto _ : state) m.AddGeneratedTokens(1);
}
BENCHMARK(BM_AddGeneratedTokens);

void BM_ObserveInterTokenLatency(benchmark::State& state) {
  Metrics& m = SharedMetrics();
  const auto samples = LatencySamples();
  size_t i = 0;
  for (auto _ : state) m.ObserveInterTokenLatency(samples[i++ & 1023]);
}
BENCHMARK(BM_ObserveInterTokenLatency)->Threads(1)->Threads(2);

void BM_ObserveBatch(benchmark::State& state) {
  Metrics& m = SharedMetrics();
  const auto samples = LatencySamples();
  size_t i = 0;
  for (auto _ : state) {
    const uint32_t rows = static_cast<uint32_t>(1 + (i & 63));
    m.ObserveBatch(BatchKind::kDecode, rows, samples[i++ & 1023]);
  }
}
BENCHMARK(BM_ObserveBatch);

void BM_SetQueueDepth(benchmark::State& state) {
  Metrics& m = SharedMetrics();
  int64_t n = 0;
  for (auto _ : state) m.SetQueueDepth(n++ & 255);
}
BENCHMARK(BM_SetQueueDepth);

// Once per RPC: method scan + code-name lookup + counter + histogram.
void BM_RecordRequest(benchmark::State& state) {
  Metrics& m = SharedMetrics();
  for (auto _ : state) m.RecordRequest("Generate", "OK", 0.25);
}
BENCHMARK(BM_RecordRequest);

// ---- scrape side
// -----------------------------------------------------------------------------------------
// Rendering the whole exposition (what one scrape costs the server, excluding HTTP).
void BM_RenderExposition(benchmark::State& state) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto m = Metrics::Create(registry).value();
  m->SetModelInfo("brt-tiny", "sha256:00", "cpu", "float32");
  m->SetBuildInfo("0.1.0", "bench");
  auto process = brt::metrics::ProcessCollector::Create().value();
  const std::vector<std::shared_ptr<prometheus::Collectable>> collectables = {registry, process};
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string text = brt::metrics::RenderText(collectables);
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["exposition_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_RenderExposition)->Unit(benchmark::kMicrosecond);

void BM_ProcessCollectorCollect(benchmark::State& state) {
  auto process = brt::metrics::ProcessCollector::Create().value();
  for (auto _ : state) benchmark::DoNotOptimize(process->Collect());
}
BENCHMARK(BM_ProcessCollectorCollect)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
