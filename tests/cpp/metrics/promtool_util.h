// Test helper: runs `promtool check metrics` on a text exposition and returns its exit code and
// output. BRT_PROMTOOL (compiled in by CMake) is the promtool path, or empty when CMake did not
// find one. Thread safety: uses a unique temporary file per call; safe to call from several tests
// at once.
#ifndef BRT_TESTS_CPP_METRICS_PROMTOOL_UTIL_H_
#define BRT_TESTS_CPP_METRICS_PROMTOOL_UTIL_H_

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace brt::metrics::testing {

inline std::string PromtoolPath() { return BRT_PROMTOOL; }

struct PromtoolResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline PromtoolResult PromtoolCheckMetrics(const std::string& exposition) {
  char path[] = "/tmp/brt_metrics_exposition_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return {};
  close(fd);
  std::ofstream(path) << exposition;
  const std::string cmd = PromtoolPath() + " check metrics < " + path + " 2>&1";
  PromtoolResult r;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    const int status = pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  unlink(path);
  return r;
}

}  // namespace brt::metrics::testing

#endif  // BRT_TESTS_CPP_METRICS_PROMTOOL_UTIL_H_
