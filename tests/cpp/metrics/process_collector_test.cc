#include "server/metrics/process_collector.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/metric_type.h"
#include "tests/cpp/metrics/collect_util.h"

namespace brt::metrics {
namespace {

double Value(const ProcessCollector& c, const std::string& name) {
  auto s = testing::FindSeries(c, name);
  EXPECT_TRUE(s.has_value()) << name;
  if (!s) return -1;
  return name == "process_cpu_seconds_total" ? s->counter.value : s->gauge.value;
}

TEST(ParseProcStatTest, CountsFieldsFromTheLastParenthesis) {
  // A command name with spaces and a ')' must not shift the fields.
  const std::string line =
      "4242 (brt server) (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 9 0 12345 "
      "987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
  auto s = ParseProcStat(line);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->utime_ticks, 150);
  EXPECT_EQ(s->stime_ticks, 50);
  EXPECT_EQ(s->starttime_ticks, 12345);
  EXPECT_EQ(s->vsize_bytes, 987654321);
  EXPECT_EQ(s->rss_pages, 2048);
}

TEST(ParseProcStatTest, RejectsTruncatedOrMalformedLines) {
  EXPECT_FALSE(ParseProcStat("").has_value());
  EXPECT_FALSE(ParseProcStat("1 (x) S 1 2 3").has_value());
  EXPECT_FALSE(ParseProcStat("no parenthesis at all").has_value());
  EXPECT_FALSE(ParseProcStat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 50 0 0 20 0 1 0 5 6 7").has_value());
}

TEST(ProcessCollectorTest, ReportsPlausibleValuesForThisProcess) {
  auto c = ProcessCollector::Create();
  ASSERT_TRUE(c.ok()) << c.status();
  // Burn a little CPU so the counter is measurably positive.
  volatile double x = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  while (std::chrono::steady_clock::now() < until) x = x + 1;

  const double cpu = Value(**c, "process_cpu_seconds_total");
  EXPECT_GT(cpu, 0.0);
  EXPECT_LT(cpu, 3600.0);
  const double rss = Value(**c, "process_resident_memory_bytes");
  const double vsize = Value(**c, "process_virtual_memory_bytes");
  EXPECT_GT(rss, 1 << 20);  // a test binary is more than 1 MiB resident
  EXPECT_GE(vsize, rss);
  const double open = Value(**c, "process_open_fds");
  EXPECT_GE(open, 3);  // stdin, stdout, stderr
  EXPECT_LE(open, Value(**c, "process_max_fds"));
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const double start = Value(**c, "process_start_time_seconds");
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 3600);  // this test started less than an hour ago
}

TEST(ProcessCollectorTest, OpenFdsFollowsOpenAndClose) {
  auto c = ProcessCollector::Create();
  ASSERT_TRUE(c.ok()) << c.status();
  const double before = Value(**c, "process_open_fds");
  const int a = open("/dev/null", O_RDONLY);
  const int b = open("/dev/null", O_RDONLY);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(Value(**c, "process_open_fds"), before + 2);
  close(a);
  close(b);
  EXPECT_EQ(Value(**c, "process_open_fds"), before);
}

TEST(ProcessCollectorTest, CpuCounterIsMonotonic) {
  auto c = ProcessCollector::Create();
  ASSERT_TRUE(c.ok()) << c.status();
  double last = 0;
  for (int i = 0; i < 5; ++i) {
    const double v = Value(**c, "process_cpu_seconds_total");
    EXPECT_GE(v, last);
    last = v;
  }
}

TEST(ProcessCollectorTest, ReadsAFakeProcTree) {
  char dir[] = "/tmp/brt_fake_proc_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string root = dir;
  ASSERT_EQ(mkdir((root + "/fd").c_str(), 0700), 0);
  for (const char* fd : {"0", "1", "2", "7"}) std::ofstream(root + "/fd/" + fd) << "";
  std::ofstream(root + "/stat") << "77 (fake) S 1 77 77 0 -1 0 0 0 0 0 " << 3 * sysconf(_SC_CLK_TCK)
                                << " " << sysconf(_SC_CLK_TCK) << " 0 0 20 0 1 0 "
                                << 10 * sysconf(_SC_CLK_TCK) << " 1000000 10 0 0 0\n";
  std::ofstream(root + "/system_stat") << "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";

  auto c = ProcessCollector::Create({root, root + "/system_stat"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(Value(**c, "process_cpu_seconds_total"), 4.0);
  EXPECT_DOUBLE_EQ(Value(**c, "process_virtual_memory_bytes"), 1000000);
  EXPECT_DOUBLE_EQ(Value(**c, "process_resident_memory_bytes"), 10.0 * sysconf(_SC_PAGESIZE));
  EXPECT_DOUBLE_EQ(Value(**c, "process_open_fds"), 4);
  EXPECT_DOUBLE_EQ(Value(**c, "process_start_time_seconds"), 1700000010);
  std::string cmd = "rm -rf " + root;
  ASSERT_EQ(std::system(cmd.c_str()), 0);
}

TEST(ProcessCollectorTest, CreateFailsWithoutProcfs) {
  auto c = ProcessCollector::Create({"/nonexistent/proc/self", "/nonexistent/proc/stat"});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ProcessCollectorTest, TypesMatchOtherClients) {
  auto c = ProcessCollector::Create();
  ASSERT_TRUE(c.ok()) << c.status();
  for (const auto& f : (*c)->Collect()) {
    if (f.name == "process_cpu_seconds_total") {
      EXPECT_EQ(f.type, prometheus::MetricType::Counter);
    } else {
      EXPECT_EQ(f.type, prometheus::MetricType::Gauge) << f.name;
    }
    EXPECT_FALSE(f.help.empty());
  }
}

}  // namespace
}  // namespace brt::metrics
