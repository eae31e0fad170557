#include "server/metrics/process_collector.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace brt::metrics {
namespace {

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::optional<double> BootTimeSeconds(const std::string& proc_stat) {
  std::optional<std::string> text = ReadFile(proc_stat);
  if (!text) return std::nullopt;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (absl::ConsumePrefix(&line, "btime ")) {
      double v = 0;
      if (absl::SimpleAtod(line, &v)) return v;
    }
  }
  return std::nullopt;
}

// Open descriptors, not counting the one this listing uses.
std::optional<double> CountOpenFds(const std::string& fd_dir) {
  DIR* dir = opendir(fd_dir.c_str());
  if (dir == nullptr) return std::nullopt;
  const std::string own = std::to_string(dirfd(dir));
  double n = 0;
  while (const dirent* e = readdir(dir)) {
    const std::string_view name = e->d_name;
    if (name == "." || name == ".." || name == own) continue;
    ++n;
  }
  closedir(dir);
  return n;
}

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

std::optional<ProcStat> ParseProcStat(const std::string& line) {
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(line).substr(close + 1), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state); field k of proc(5) is f[k - 3].
  constexpr size_t kUtime = 14 - 3, kStime = 15 - 3, kStart = 22 - 3, kVsize = 23 - 3,
                   kRss = 24 - 3;
  if (f.size() <= kRss) return std::nullopt;
  ProcStat s;
  if (!absl::SimpleAtod(f[kUtime], &s.utime_ticks) ||
      !absl::SimpleAtod(f[kStime], &s.stime_ticks) ||
      !absl::SimpleAtod(f[kStart], &s.starttime_ticks) ||
      !absl::SimpleAtod(f[kVsize], &s.vsize_bytes) || !absl::SimpleAtod(f[kRss], &s.rss_pages)) {
    return std::nullopt;
  }
  return s;
}

absl::StatusOr<std::shared_ptr<ProcessCollector>> ProcessCollector::Create(
    ProcessCollectorOptions options) {
  const std::string stat_path = options.proc_self + "/stat";
  std::optional<std::string> line = ReadFile(stat_path);
  std::optional<ProcStat> stat = line ? ParseProcStat(*line) : std::nullopt;
  if (!stat) {
    return absl::FailedPreconditionError(
        absl::StrCat("process metrics need a readable procfs; cannot parse ", stat_path));
  }
  std::optional<double> btime = BootTimeSeconds(options.proc_stat);
  if (!btime) {
    return absl::FailedPreconditionError(
        absl::StrCat("process metrics need the btime line of ", options.proc_stat));
  }
  const long ticks = sysconf(_SC_CLK_TCK);
  const long page = sysconf(_SC_PAGESIZE);
  if (ticks <= 0 || page <= 0) {
    return absl::FailedPreconditionError("sysconf(_SC_CLK_TCK / _SC_PAGESIZE) failed");
  }
  const double start = *btime + stat->starttime_ticks / static_cast<double>(ticks);
  return std::shared_ptr<ProcessCollector>(new ProcessCollector(
      std::move(options), start, static_cast<double>(ticks), static_cast<double>(page)));
}

ProcessCollector::ProcessCollector(ProcessCollectorOptions options, double start_time_seconds,
                                   double ticks_per_second, double page_bytes)
    : options_(std::move(options)),
      start_time_seconds_(start_time_seconds),
      ticks_per_second_(ticks_per_second),
      page_bytes_(page_bytes) {}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  std::optional<std::string> line = ReadFile(options_.proc_self + "/stat");
  if (std::optional<ProcStat> s = line ? ParseProcStat(*line) : std::nullopt) {
    out.push_back(Family("process_cpu_seconds_total", "Total user and system CPU time in seconds.",
                         MetricType::Counter,
                         (s->utime_ticks + s->stime_ticks) / ticks_per_second_));
    out.push_back(Family("process_resident_memory_bytes", "Resident memory size in bytes.",
                         MetricType::Gauge, s->rss_pages * page_bytes_));
    out.push_back(Family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                         MetricType::Gauge, s->vsize_bytes));
  }
  if (std::optional<double> fds = CountOpenFds(options_.proc_self + "/fd")) {
    out.push_back(
        Family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, *fds));
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    const double max = limit.rlim_cur == RLIM_INFINITY ? -1 : static_cast<double>(limit.rlim_cur);
    if (max >= 0) {
      out.push_back(Family("process_max_fds", "Maximum number of open file descriptors.",
                           MetricType::Gauge, max));
    }
  }
  out.push_back(Family("process_start_time_seconds",
                       "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                       start_time_seconds_));
  return out;
}

}  // namespace brt::metrics
