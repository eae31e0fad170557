// The text exposition of a private registry, as /metrics serves it, must pass `promtool check
// metrics` (syntax and the naming lint) with no output at all.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_exposer.h"
#include "server/metrics/process_collector.h"
#include "tests/cpp/metrics/promtool_util.h"

namespace brt::metrics {
namespace {

using testing::PromtoolCheckMetrics;
using testing::PromtoolPath;

class ExpositionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (PromtoolPath().empty())
      GTEST_FAIL()
          << "promtool not found at configure time (deploy/install-deps.sh installs prometheus)";
    registry_ = std::make_shared<prometheus::Registry>();
    auto m = Metrics::Create(registry_);
    ASSERT_TRUE(m.ok()) << m.status();
    metrics_ = std::move(*m);
    auto p = ProcessCollector::Create();
    ASSERT_TRUE(p.ok()) << p.status();
    process_ = *p;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Metrics> metrics_;
  std::shared_ptr<ProcessCollector> process_;
};

TEST_F(ExpositionTest, FreshFacadePassesPromtool) {
  const std::string text = RenderText({registry_, process_});
  const auto r = PromtoolCheckMetrics(text);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "") << text;
}

TEST_F(ExpositionTest, EverySeriesTouchedPassesPromtool) {
  metrics_->RecordRequest("Score", "OK", 0.5);
  metrics_->RecordRequest("Generate", "RESOURCE_EXHAUSTED", 0.001);
  metrics_->RecordRequest("NotAMethod", "OK", 0.001);
  metrics_->AddScoredTokens(100);
  metrics_->AddGeneratedTokens(10);
  metrics_->ObserveTimeToFirstToken(0.03);
  metrics_->ObserveInterTokenLatency(0.004);
  metrics_->SetQueueDepth(2);
  metrics_->SetQueueCapacity(256);
  metrics_->ObserveQueueWait(0.0002);
  metrics_->ObserveBatch(BatchKind::kScoreBlock, 8, 0.05);
  metrics_->ObserveBatch(BatchKind::kDecode, 33, 0.003);
  metrics_->SetSessionsResident(4);
  metrics_->SetSessionsCapacity(1024);
  metrics_->AddSessionsEvicted(EvictionReason::kCapacity);
  metrics_->SetStateBytes(StateLocation::kDevice, 1 << 24);
  metrics_->SetStateBytes(StateLocation::kHost, 1 << 20);
  metrics_->ObserveSnapshot(SnapshotOp::kSave, 0.2, 1 << 20);
  metrics_->AddSnapshotFailure(SnapshotOp::kSave, absl::StatusCode::kResourceExhausted);
  // Label values with characters the serializer must escape.
  metrics_->SetModelInfo("brt \"tiny\"\\v1", "sha256:0123", "cuda:0", "bfloat16");
  metrics_->SetBuildInfo("0.1.0", "deadbeef");
  const std::string text = RenderText({registry_, process_});
  const auto r = PromtoolCheckMetrics(text);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "") << text;
  EXPECT_NE(text.find("# TYPE brt_requests_total counter"), std::string::npos);
  EXPECT_NE(text.find("brt_scored_tokens_total 100"), std::string::npos);
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter"), std::string::npos);
}

TEST_F(ExpositionTest, PromtoolReallyChecks) {
  // Guards against a check that always passes: a counter without _total is a lint warning.
  const auto r =
      PromtoolCheckMetrics("# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n");
  EXPECT_NE(r.output, "");
}

}  // namespace
}  // namespace brt::metrics
