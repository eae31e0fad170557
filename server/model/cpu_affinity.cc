#include "server/model/cpu_affinity.h"

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace brt {

absl::StatusOr<PinWorkers> ParsePinWorkers(const std::string& value) {
  if (value == "auto") return PinWorkers::kAuto;
  if (value == "on") return PinWorkers::kOn;
  if (value == "off") return PinWorkers::kOff;
  return absl::InvalidArgumentError(absl::StrCat(
      "--pin_workers must be auto (each row worker on its own CPU when they are as many as the CPUs this "
      "process may use), on (always, round robin over those CPUs) or off; got '", value, "'"));
}

std::vector<int> AllowedCpus() {
  std::vector<int> cpus;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
#endif
  return cpus;
}

int UsableCpus() {
  const size_t allowed = AllowedCpus().size();
  if (allowed > 0) return static_cast<int>(allowed);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::vector<int> WorkerCpus(PinWorkers mode, int workers, const std::vector<int>& allowed) {
  std::vector<int> out;
  if (mode == PinWorkers::kOff || allowed.empty() || workers < 1) return out;
  if (mode == PinWorkers::kAuto && static_cast<size_t>(workers) != allowed.size()) return out;
  for (int i = 0; i < workers; ++i) out.push_back(allowed[static_cast<size_t>(i) % allowed.size()]);
  return out;
}

bool PinThisThread(int cpu) {
#if defined(__linux__)
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
#else
  (void)cpu;
  return false;
#endif
}

std::string CpuList(const std::vector<int>& cpus) { return absl::StrJoin(cpus, ","); }

}  // namespace brt
