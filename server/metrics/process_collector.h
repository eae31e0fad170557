// ProcessCollector: the standard process_* metrics of the running process, read from procfs at
// scrape time.
//
// prometheus-cpp 1.0 has no process collector, so this one reads /proc/self/stat, /proc/self/fd and
// getrlimit on each Collect() (a few microseconds: one small file read and one directory listing)
// and keeps no state but the process start time, read once in Create(). Register it with the
// exposer beside the registry (MetricsExposer does). Exported, with the names and types other
// Prometheus clients use:
//   process_cpu_seconds_total (counter)  user + system CPU time
//   process_resident_memory_bytes        resident set size
//   process_virtual_memory_bytes         virtual memory size
//   process_open_fds                     open file descriptors
//   process_max_fds                      the soft RLIMIT_NOFILE
//   process_start_time_seconds           start of the process, seconds since the Unix epoch
// A value that cannot be read at scrape time is left out of that scrape rather than reported as 0.
//
// Thread safety: Collect() is const and safe to call concurrently.
#ifndef BRT_SERVER_METRICS_PROCESS_COLLECTOR_H_
#define BRT_SERVER_METRICS_PROCESS_COLLECTOR_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace brt::metrics {

struct ProcessCollectorOptions {
  // procfs directory of the process to describe (a test may point it at a fake tree).
  std::string proc_self = "/proc/self";
  // The system-wide stat file, for btime (boot time, Unix seconds).
  std::string proc_stat = "/proc/stat";
};

// The fields of /proc/<pid>/stat this collector uses, in the units procfs gives.
struct ProcStat {
  double utime_ticks = 0;
  double stime_ticks = 0;
  double starttime_ticks = 0;  // since boot
  double vsize_bytes = 0;
  double rss_pages = 0;
};
// Parses the one line of /proc/<pid>/stat; nullopt if it is malformed. The command name (field 2)
// may hold spaces and parentheses, so fields are counted from the last ')'.
std::optional<ProcStat> ParseProcStat(const std::string& line);

class ProcessCollector : public prometheus::Collectable {
 public:
  // FAILED_PRECONDITION if procfs cannot be read (not Linux, or /proc not mounted).
  static absl::StatusOr<std::shared_ptr<ProcessCollector>> Create(
      ProcessCollectorOptions options = {});

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  ProcessCollector(ProcessCollectorOptions options, double start_time_seconds,
                   double ticks_per_second, double page_bytes);

  const ProcessCollectorOptions options_;
  const double start_time_seconds_;
  const double ticks_per_second_;
  const double page_bytes_;
};

}  // namespace brt::metrics

#endif  // BRT_SERVER_METRICS_PROCESS_COLLECTOR_H_
