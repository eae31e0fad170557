// MetricsExposer over real HTTP on a free loopback port, read with a plain socket client.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

struct HttpResponse {
  std::string status_line;
  std::string headers;
  std::string body;
};

// GET http://127.0.0.1:<port><path> over HTTP/1.0 (the server closes the connection after the
// reply).
HttpResponse HttpGet(int port, const std::string& path) {
  HttpResponse r;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return r;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return r;
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return r;
  }
  std::string raw;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t eol = raw.find("\r\n");
  const size_t end = raw.find("\r\n\r\n");
  if (eol == std::string::npos || end == std::string::npos) return r;
  r.status_line = raw.substr(0, eol);
  r.headers = raw.substr(eol + 2, end - eol - 2);
  r.body = raw.substr(end + 4);
  return r;
}

class ExposerTest : public ::testing::Test {
 protected:
  void SetUp() override {
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

TEST_F(ExposerTest, ServesMetricsOverHttpOnAFreeLoopbackPort) {
  auto exposer = MetricsExposer::Start("127.0.0.1:0", {registry_, process_});
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  ASSERT_NE(*exposer, nullptr);
  const int port = (*exposer)->port();
  ASSERT_GT(port, 0);

  metrics_->AddScoredTokens(42);
  metrics_->RecordRequest("Score", "UNAVAILABLE", 0.001);
  const HttpResponse r = HttpGet(port, "/metrics");
  EXPECT_NE(r.status_line.find(" 200 "), std::string::npos) << r.status_line;
  // prometheus-cpp 1.0 sends "text/plain; charset=utf-8"; Prometheus parses text/plain as format
  // 0.0.4.
  EXPECT_NE(r.headers.find("Content-Type: text/plain"), std::string::npos) << r.headers;
  EXPECT_NE(r.body.find("\nbrt_scored_tokens_total 42\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("brt_requests_total{code=\"UNAVAILABLE\",method=\"Score\"} 1"),
            std::string::npos);
  EXPECT_NE(r.body.find("\nprocess_resident_memory_bytes "), std::string::npos);

  // A later scrape sees later writes.
  metrics_->AddScoredTokens(8);
  EXPECT_NE(HttpGet(port, "/metrics").body.find("\nbrt_scored_tokens_total 50\n"),
            std::string::npos);
}

TEST_F(ExposerTest, LiveScrapePassesPromtool) {
  if (testing::PromtoolPath().empty())
    GTEST_FAIL()
        << "promtool not found at configure time (deploy/install-deps.sh installs prometheus)";
  auto exposer = MetricsExposer::Start("127.0.0.1:0", {registry_, process_});
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  metrics_->SetModelInfo("brt-tiny", "sha256:00", "cpu", "float32");
  HttpGet((*exposer)->port(), "/metrics");  // so the exposer's own scrape metrics have samples
  const HttpResponse r = HttpGet((*exposer)->port(), "/metrics");
  ASSERT_FALSE(r.body.empty());
  const auto check = testing::PromtoolCheckMetrics(r.body);
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(check.output, "") << r.body;
}

TEST_F(ExposerTest, UnknownPathIsNotFound) {
  auto exposer = MetricsExposer::Start("127.0.0.1:0", {registry_});
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const HttpResponse r = HttpGet((*exposer)->port(), "/sessions");
  EXPECT_NE(r.status_line.find(" 404"), std::string::npos) << r.status_line;
}

TEST_F(ExposerTest, EmptyAddressTurnsMetricsOff) {
  auto exposer = MetricsExposer::Start("", {registry_});
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  EXPECT_EQ(*exposer, nullptr);
}

TEST_F(ExposerTest, RejectsAnAddressWithoutHostOrPort) {
  for (const char* bad :
       {"9464", ":9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000"}) {
    auto exposer = MetricsExposer::Start(bad, {registry_});
    EXPECT_EQ(exposer.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(ExposerTest, PortInUseIsUnavailable) {
  auto first = MetricsExposer::Start("127.0.0.1:0", {registry_});
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = MetricsExposer::Start(taken, {registry_});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST_F(ExposerTest, StopsListeningWhenDestroyed) {
  int port = 0;
  {
    auto exposer = MetricsExposer::Start("127.0.0.1:0", {registry_});
    ASSERT_TRUE(exposer.ok()) << exposer.status();
    port = (*exposer)->port();
  }
  EXPECT_EQ(HttpGet(port, "/metrics").status_line, "");
}

}  // namespace
}  // namespace brt::metrics
