// brt-metrics-dump: prints what the metrics facade exports, from a fresh Metrics on a private
// registry.
//
//   brt-metrics-dump                 one line per metric family: "<name> <type>", sorted (the
//   golden list
//                                    tests/metrics/metric_names.txt is this output)
//   brt-metrics-dump --exposition    the text exposition with every series touched once (for
//   promtool) brt-metrics-dump --serve ADDR    serve a fresh Metrics on ADDR (e.g. 127.0.0.1:0),
//   print "port N" and
//                                    add 64 scored tokens every 100 ms until stdin closes (for
//                                    scrape tests)
//
// Exits 1 if the families collected differ from Metrics::Catalog() plus the process collector, so
// the golden list cannot silently drift from the code.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_exposer.h"
#include "server/metrics/process_collector.h"

namespace {

using brt::metrics::Metrics;

std::string TypeName(prometheus::MetricType t) {
  switch (t) {
    case prometheus::MetricType::Counter:
      return "counter";
    case prometheus::MetricType::Gauge:
      return "gauge";
    case prometheus::MetricType::Histogram:
      return "histogram";
    case prometheus::MetricType::Summary:
      return "summary";
    default:
      return "untyped";
  }
}

void TouchEverySeries(Metrics& m) {
  m.RecordRequest("Score", "OK", 0.5);
  m.RecordRequest("Generate", "UNAVAILABLE", 0.001);
  m.RecordTenantRequest("tenant_a", 0);
  m.AddScoredTokens(128);
  m.AddGeneratedTokens(16);
  m.ObserveTimeToFirstToken(0.02);
  m.ObserveInterTokenLatency(0.004);
  m.SetQueueDepth(3);
  m.SetQueueCapacity(256);
  m.ObserveQueueWait(0.0007);
  m.ObserveBatch(brt::metrics::BatchKind::kScoreBlock, 8, 0.03);
  m.ObserveBatch(brt::metrics::BatchKind::kDecode, 17, 0.002);
  m.SetSessionsResident(12);
  m.SetSessionsCapacity(1024);
  m.AddSessionsEvicted(brt::metrics::EvictionReason::kIdleTimeout);
  m.SetStateBytes(brt::metrics::StateLocation::kDevice, 12 << 20);
  m.SetStateBytes(brt::metrics::StateLocation::kHost, 3 << 20);
  m.ObserveSnapshot(brt::metrics::SnapshotOp::kSave, 0.08, 1 << 20);
  m.ObserveSnapshot(brt::metrics::SnapshotOp::kRestore, 0.05, 1 << 20);
  m.AddSnapshotFailure(brt::metrics::SnapshotOp::kRestore, absl::StatusCode::kDataLoss);
  m.SetModelInfo("brt-tiny", "sha256:0123abcd", "cpu", "float32");
  m.SetBuildInfo("0.1.0", "unknown");
}

int Fail(const absl::Status& s) {
  std::cerr << "brt-metrics-dump: " << s << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  auto registry = std::make_shared<prometheus::Registry>();
  auto metrics = Metrics::Create(registry);
  if (!metrics.ok()) return Fail(metrics.status());
  auto process = brt::metrics::ProcessCollector::Create();
  if (!process.ok()) return Fail(process.status());
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables = {registry, *process};

  if (mode == "--serve") {
    if (argc < 3) return Fail(absl::InvalidArgumentError("--serve needs an address"));
    (*metrics)->SetBuildInfo("0.1.0", "brt-metrics-dump");
    auto exposer = brt::metrics::MetricsExposer::Start(argv[2], collectables);
    if (!exposer.ok()) return Fail(exposer.status());
    std::cout << "port " << (*exposer)->port() << std::endl;
    std::atomic<bool> done{false};
    std::thread reader([&done] {
      std::string line;
      while (std::getline(std::cin, line)) {
      }
      done = true;
    });
    // Ticks until stdin reaches EOF (the test closes it or exits).
    while (!done) {
      (*metrics)->AddScoredTokens(64);
      (*metrics)->ObserveBatch(brt::metrics::BatchKind::kScoreBlock, 4, 0.01);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    reader.join();
    return 0;
  }

  TouchEverySeries(**metrics);
  if (mode == "--exposition") {
    std::cout << brt::metrics::RenderText(collectables);
    return 0;
  }
  if (!mode.empty()) {
    return Fail(
        absl::InvalidArgumentError("usage: brt-metrics-dump [--exposition | --serve ADDR]"));
  }

  std::map<std::string, std::string> collected;
  for (const auto& c : collectables) {
    for (const prometheus::MetricFamily& f : c->Collect()) collected[f.name] = TypeName(f.type);
  }
  std::map<std::string, std::string> expected;
  for (const auto& d : Metrics::Catalog()) expected[d.name] = d.type;
  for (const auto& [name, type] : collected) {
    if (name.rfind("process_", 0) == 0) expected[name] = type;
  }
  for (const auto& [name, type] : collected) std::cout << name << " " << type << "\n";
  if (collected != expected) {
    std::cerr << "brt-metrics-dump: collected families differ from Metrics::Catalog()\n";
    return 1;
  }
  return 0;
}
