#include "server/metrics/metrics.h"

#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "tests/cpp/metrics/collect_util.h"

namespace brt::metrics {
namespace {

using testing::FindSeries;
using testing::SeriesCount;

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = std::make_shared<prometheus::Registry>();
    auto m = Metrics::Create(registry_);
    ASSERT_TRUE(m.ok()) << m.status();
    metrics_ = std::move(*m);
  }

  double CounterValue(const std::string& name, const testing::LabelMap& labels = {}) {
    auto s = FindSeries(*registry_, name, labels);
    EXPECT_TRUE(s.has_value()) << name;
    return s ? s->counter.value : -1;
  }
  double GaugeValue(const std::string& name, const testing::LabelMap& labels = {}) {
    auto s = FindSeries(*registry_, name, labels);
    EXPECT_TRUE(s.has_value()) << name;
    return s ? s->gauge.value : -1;
  }
  prometheus::ClientMetric::Histogram Hist(const std::string& name,
                                           const testing::LabelMap& labels = {}) {
    auto s = FindSeries(*registry_, name, labels);
    EXPECT_TRUE(s.has_value()) << name;
    return s ? s->histogram : prometheus::ClientMetric::Histogram{};
  }
  // Cumulative count of the bucket with upper bound `le`.
  static uint64_t BucketCount(const prometheus::ClientMetric::Histogram& h, double le) {
    for (const auto& b : h.bucket) {
      if (b.upper_bound == le) return b.cumulative_count;
    }
    ADD_FAILURE() << "no bucket le=" << le;
    return 0;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Metrics> metrics_;
};

TEST_F(MetricsTest, TokenCountersAddExactlyWhatWasPassed) {
  metrics_->AddScoredTokens(1000);
  metrics_->AddScoredTokens(24);
  metrics_->AddGeneratedTokens(7);
  EXPECT_EQ(CounterValue("brt_scored_tokens_total"), 1024);
  EXPECT_EQ(CounterValue("brt_generated_tokens_total"), 7);
}

TEST_F(MetricsTest, CountersAreExactUnderConcurrentWriters) {
  constexpr int kThreads = 4, kAdds = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this] {
      for (int i = 0; i < kAdds; ++i) {
        metrics_->AddScoredTokens(3);
        metrics_->ObserveInterTokenLatency(0.001);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(CounterValue("brt_scored_tokens_total"), 3.0 * kThreads * kAdds);
  EXPECT_EQ(Hist("brt_inter_token_latency_seconds").sample_count,
            static_cast<uint64_t>(kThreads) * kAdds);
}

TEST_F(MetricsTest, RecordRequestCountsByMethodAndCode) {
  metrics_->RecordRequest("Score", "OK", 1.5);
  metrics_->RecordRequest("Score", "OK", 0.5);
  metrics_->RecordRequest("Score", "UNAVAILABLE", 0.001);
  metrics_->RecordRequest("Generate", 5 /* NOT_FOUND */, 0.002);
  EXPECT_EQ(CounterValue("brt_requests_total", {{"method", "Score"}, {"code", "OK"}}), 2);
  EXPECT_EQ(CounterValue("brt_requests_total", {{"method", "Score"}, {"code", "UNAVAILABLE"}}), 1);
  EXPECT_EQ(CounterValue("brt_requests_total", {{"method", "Generate"}, {"code", "NOT_FOUND"}}), 1);
  const auto h = Hist("brt_request_duration_seconds", {{"method", "Score"}});
  EXPECT_EQ(h.sample_count, 3u);
  EXPECT_DOUBLE_EQ(h.sample_sum, 2.001);
  EXPECT_EQ(BucketCount(h, 0.001), 1u);
  EXPECT_EQ(BucketCount(h, 0.5), 2u);
  EXPECT_EQ(BucketCount(h, 2.5), 3u);
}

TEST_F(MetricsTest, KnownMethodsAreExportedAtZeroBeforeTheFirstCall) {
  EXPECT_EQ(CounterValue("brt_requests_total", {{"method", "CreateSession"}, {"code", "OK"}}), 0);
  EXPECT_EQ(Hist("brt_request_duration_seconds", {{"method", "Generate"}}).sample_count, 0u);
}

TEST_F(MetricsTest, LabelValuesStayInClosedSets) {
  // An unconfigured method and a code name that is not a gRPC code must not create new label
  // values.
  metrics_->RecordRequest("session-7f3a9c", "OK", 0.1);
  metrics_->RecordRequest("Score", "not a code", 0.1);
  metrics_->RecordRequest("Score", 99, 0.1);
  EXPECT_EQ(CounterValue("brt_requests_total", {{"method", "other"}, {"code", "OK"}}), 1);
  EXPECT_EQ(CounterValue("brt_requests_total", {{"method", "Score"}, {"code", "UNKNOWN"}}), 2);
  std::set<std::string> methods;
  for (const auto& f : registry_->Collect()) {
    if (f.name != "brt_requests_total") continue;
    for (const auto& m : f.metric) {
      for (const auto& l : m.label) {
        if (l.name == "method") methods.insert(l.value);
      }
    }
  }
  const std::vector<std::string> configured = MetricsOptions().methods;
  std::set<std::string> allowed(configured.begin(), configured.end());
  allowed.insert("other");
  for (const auto& m : methods) EXPECT_TRUE(allowed.count(m)) << m;
}

TEST_F(MetricsTest, GrpcCodeNamesAreCanonical) {
  EXPECT_EQ(GrpcCodeName(0), "OK");
  EXPECT_EQ(GrpcCodeName(8), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(GrpcCodeName(static_cast<int>(absl::StatusCode::kDataLoss)), "DATA_LOSS");
  EXPECT_EQ(GrpcCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(GrpcCodeName(-1), "UNKNOWN");
  EXPECT_EQ(GrpcCodeName(17), "UNKNOWN");
}

TEST_F(MetricsTest, LatencyHistogramsUseWorkloadBuckets) {
  metrics_->ObserveTimeToFirstToken(0.00005);  // below the first bound
  metrics_->ObserveTimeToFirstToken(0.0001);   // bounds are inclusive
  metrics_->ObserveTimeToFirstToken(0.2);
  metrics_->ObserveTimeToFirstToken(45);  // +Inf only
  const auto h = Hist("brt_time_to_first_token_seconds");
  EXPECT_EQ(h.sample_count, 4u);
  EXPECT_DOUBLE_EQ(h.sample_sum, 0.00005 + 0.0001 + 0.2 + 45);
  EXPECT_EQ(BucketCount(h, 0.0001), 2u);
  EXPECT_EQ(BucketCount(h, 0.25), 3u);
  EXPECT_EQ(BucketCount(h, 30), 3u);
  ASSERT_EQ(h.bucket.size(), kLatencyBuckets.size() + 1);  // + the +Inf bucket
  EXPECT_EQ(h.bucket.back().cumulative_count, 4u);
  EXPECT_EQ(kLatencyBuckets.front(), 0.0001);
  EXPECT_EQ(kLatencyBuckets.back(), 30);
}

TEST_F(MetricsTest, QueueMetrics) {
  metrics_->SetQueueCapacity(256);
  metrics_->SetQueueDepth(17);
  metrics_->SetQueueDepth(5);
  metrics_->ObserveQueueWait(0.003);
  EXPECT_EQ(GaugeValue("brt_queue_capacity"), 256);
  EXPECT_EQ(GaugeValue("brt_queue_depth"), 5);
  const auto h = Hist("brt_queue_wait_seconds");
  EXPECT_EQ(h.sample_count, 1u);
  EXPECT_DOUBLE_EQ(h.sample_sum, 0.003);
}

TEST_F(MetricsTest, ObserveBatchRecordsRowsAndStepDurationByKind) {
  metrics_->ObserveBatch(BatchKind::kScoreBlock, 8, 0.04);
  metrics_->ObserveBatch(BatchKind::kDecode, 1, 0.0003);
  metrics_->ObserveBatch(BatchKind::kDecode, 64, 0.002);
  const auto rows = Hist("brt_executor_batch_rows", {{"kind", "decode"}});
  EXPECT_EQ(rows.sample_count, 2u);
  EXPECT_EQ(rows.sample_sum, 65);
  EXPECT_EQ(BucketCount(rows, 1), 1u);
  EXPECT_EQ(BucketCount(rows, 48), 1u);
  EXPECT_EQ(BucketCount(rows, 64), 2u);
  const auto score_rows = Hist("brt_executor_batch_rows", {{"kind", "score_block"}});
  EXPECT_EQ(score_rows.sample_count, 1u);
  EXPECT_EQ(BucketCount(score_rows, 6), 0u);
  EXPECT_EQ(BucketCount(score_rows, 8), 1u);
  const auto step = Hist("brt_executor_step_duration_seconds", {{"kind", "score_block"}});
  EXPECT_EQ(step.sample_count, 1u);
  EXPECT_DOUBLE_EQ(step.sample_sum, 0.04);
  EXPECT_EQ(Hist("brt_executor_step_duration_seconds", {{"kind", "decode"}}).sample_count, 2u);
}

TEST_F(MetricsTest, SessionMetrics) {
  metrics_->SetSessionsCapacity(1024);
  metrics_->SetSessionsResident(12);
  metrics_->AddSessionsEvicted(EvictionReason::kIdleTimeout);
  metrics_->AddSessionsEvicted(EvictionReason::kIdleTimeout, 2);
  metrics_->SetStateBytes(StateLocation::kDevice, 3u << 30);
  metrics_->SetStateBytes(StateLocation::kHost, 4096);
  EXPECT_EQ(GaugeValue("brt_sessions_capacity"), 1024);
  EXPECT_EQ(GaugeValue("brt_sessions_resident"), 12);
  EXPECT_EQ(CounterValue("brt_sessions_evicted_total", {{"reason", "idle_timeout"}}), 3);
  EXPECT_EQ(CounterValue("brt_sessions_evicted_total", {{"reason", "capacity"}}), 0);
  EXPECT_EQ(GaugeValue("brt_session_state_bytes", {{"location", "device"}}), 3.0 * (1u << 30));
  EXPECT_EQ(GaugeValue("brt_session_state_bytes", {{"location", "host"}}), 4096);
}

TEST_F(MetricsTest, SnapshotMetrics) {
  metrics_->ObserveSnapshot(SnapshotOp::kSave, 0.25, 1 << 20);
  metrics_->ObserveSnapshot(SnapshotOp::kSave, 0.75, 1 << 20);
  metrics_->ObserveSnapshot(SnapshotOp::kRestore, 0.1, 4096);
  metrics_->AddSnapshotFailure(SnapshotOp::kRestore, absl::StatusCode::kDataLoss);
  metrics_->AddSnapshotFailure(SnapshotOp::kRestore, absl::StatusCode::kAborted);
  const auto save = Hist("brt_snapshot_duration_seconds", {{"op", "save"}});
  EXPECT_EQ(save.sample_count, 2u);
  EXPECT_DOUBLE_EQ(save.sample_sum, 1.0);
  EXPECT_EQ(CounterValue("brt_snapshot_bytes_total", {{"op", "save"}}), 2 << 20);
  EXPECT_EQ(CounterValue("brt_snapshot_bytes_total", {{"op", "restore"}}), 4096);
  EXPECT_EQ(
      CounterValue("brt_snapshot_failures_total", {{"op", "restore"}, {"reason", "DATA_LOSS"}}), 1);
  EXPECT_EQ(CounterValue("brt_snapshot_failures_total", {{"op", "restore"}, {"reason", "ABORTED"}}),
            1);
  // Expected reasons exist at 0 before any failure, so increase() sees the first one.
  EXPECT_EQ(CounterValue("brt_snapshot_failures_total", {{"op", "save"}, {"reason", "INTERNAL"}}),
            0);
}

TEST_F(MetricsTest, InfoGaugesHoldOneSeriesWithValueOne) {
  EXPECT_EQ(SeriesCount(*registry_, "brt_model_info"), 0u);
  metrics_->SetModelInfo("brt-tiny", "sha256:aa", "cpu", "float32");
  metrics_->SetModelInfo("brt-base", "sha256:bb", "cuda:0", "bfloat16");  // a reload replaces it
  metrics_->SetBuildInfo("0.1.0", "abc123");
  EXPECT_EQ(SeriesCount(*registry_, "brt_model_info"), 1u);
  EXPECT_EQ(GaugeValue("brt_model_info", {{"name", "brt-base"},
                                          {"fingerprint", "sha256:bb"},
                                          {"device", "cuda:0"},
                                          {"dtype", "bfloat16"}}),
            1);
  EXPECT_EQ(GaugeValue("brt_build_info", {{"version", "0.1.0"}, {"git_commit", "abc123"}}), 1);
}

TEST_F(MetricsTest, TenantRequestsAreCountedByTenantAndCode) {
  metrics_->RecordTenantRequest("alice", 0);
  metrics_->RecordTenantRequest("alice", 0);
  metrics_->RecordTenantRequest("alice", 16);  // UNAUTHENTICATED
  metrics_->RecordTenantRequest("bob", 5);
  metrics_->RecordTenantRequest("", 0);  // the unnamed tenant is not counted
  EXPECT_EQ(SeriesCount(*registry_, "brt_tenant_requests_total"), 3u);
}

TEST_F(MetricsTest, CatalogueMatchesWhatIsExported) {
  // Touch the lazily created families, then compare the registry's families with Catalog().
  metrics_->SetModelInfo("m", "f", "cpu", "float32");
  metrics_->SetBuildInfo("v", "c");
  metrics_->RecordTenantRequest("alice", 0);
  std::map<std::string, prometheus::MetricType> exported;
  for (const auto& f : registry_->Collect()) exported[f.name] = f.type;
  const auto catalog = Metrics::Catalog();
  ASSERT_EQ(exported.size(), catalog.size());
  for (const auto& d : catalog) {
    ASSERT_TRUE(exported.count(d.name)) << d.name;
    EXPECT_EQ(d.name.rfind("brt_", 0), 0u) << d.name;
    const prometheus::MetricType t = exported[d.name];
    const std::string type = t == prometheus::MetricType::Counter     ? "counter"
                             : t == prometheus::MetricType::Gauge     ? "gauge"
                             : t == prometheus::MetricType::Histogram ? "histogram"
                                                                      : "other";
    EXPECT_EQ(type, d.type) << d.name;
    if (d.type == "counter") {
      EXPECT_TRUE(d.name.size() > 6 && d.name.substr(d.name.size() - 6) == "_total") << d.name;
    }
    EXPECT_FALSE(d.help.empty()) << d.name;
    for (const auto& label : d.labels) {
      EXPECT_NE(label, "session_id");
      EXPECT_NE(label, "session");
    }
  }
}

TEST(MetricsCreateTest, RejectsANullRegistry) {
  auto m = Metrics::Create(nullptr);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MetricsCreateTest, RejectsDuplicateOrReservedMethodNames) {
  auto registry = std::make_shared<prometheus::Registry>();
  MetricsOptions dup;
  dup.methods = {"Score", "Score"};
  EXPECT_EQ(Metrics::Create(registry, dup).status().code(), absl::StatusCode::kInvalidArgument);
  MetricsOptions other;
  other.methods = {"other"};
  EXPECT_EQ(Metrics::Create(registry, other).status().code(), absl::StatusCode::kInvalidArgument);
  MetricsOptions empty;
  empty.methods = {""};
  EXPECT_EQ(Metrics::Create(registry, empty).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MetricsCreateTest, RejectsARegistryWithAConflictingFamily) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge().Name("brt_scored_tokens_total").Help("wrong type").Register(*registry);
  auto m = Metrics::Create(registry);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
}

TEST(MetricsCreateTest, TwoFacadesOnPrivateRegistriesAreIndependent) {
  auto r1 = std::make_shared<prometheus::Registry>();
  auto r2 = std::make_shared<prometheus::Registry>();
  auto m1 = Metrics::Create(r1);
  auto m2 = Metrics::Create(r2);
  ASSERT_TRUE(m1.ok() && m2.ok());
  (*m1)->AddGeneratedTokens(5);
  EXPECT_EQ(FindSeries(*r1, "brt_generated_tokens_total")->counter.value, 5);
  EXPECT_EQ(FindSeries(*r2, "brt_generated_tokens_total")->counter.value, 0);
}

}  // namespace
}  // namespace brt::metrics
