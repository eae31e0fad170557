// Pinning the row workers to CPUs (--pin_workers), and counting the CPUs a process may use.
//
// Why: the native decode step's team meets ~30 times a step at a SpinBarrier; a member that waits long
// sleeps on a futex and is woken by the last to arrive. Linux places a woken thread near its waker, so on
// the project's 2-core VM the two workers often ended up taking turns on one core while the other sat idle:
// a scheduler trace of 32 generating sessions through gRPC showed both workers on one CPU for ~5 ms at a
// time and the machine 21-25% idle. Each worker pinned to its own CPU runs the step as two cores.
//
// Thread safety: every function is thread-safe; PinThisThread acts on the calling thread.
#ifndef BRT_SERVER_MODEL_CPU_AFFINITY_H_
#define BRT_SERVER_MODEL_CPU_AFFINITY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace brt {

// ModelRunnerOptions::pin_workers. kAuto pins only when the workers are as many as the CPUs this process
// may run on (a server sized to the whole machine or container); two replicas of a few workers each on a
// big machine are left to the scheduler rather than all pinned to the same first CPUs.
enum class PinWorkers { kAuto, kOn, kOff };

// "auto", "on" or "off" (--pin_workers); INVALID_ARGUMENT naming them otherwise.
absl::StatusOr<PinWorkers> ParsePinWorkers(const std::string& value);

// The CPUs this process may run on (its affinity mask, which a container's cpuset narrows), ascending;
// empty where the OS does not say (not Linux).
std::vector<int> AllowedCpus();

// How many CPUs this process may run on: AllowedCpus().size(), or where that is unknown the CPUs online
// (std::thread::hardware_concurrency, which counts a container's excluded CPUs too); at least 1. A CPU quota
// (cgroup cpu.max) is not read.
int UsableCpus();

// The CPU for each of `workers` threads, or empty for none pinned. Pure. kOff, or no CPU known: empty.
// kAuto: allowed[i] when workers == allowed.size(), else empty. kOn: allowed[i % allowed.size()].
std::vector<int> WorkerCpus(PinWorkers mode, int workers, const std::vector<int>& allowed);

// Pins the calling thread to `cpu`; false when the OS refuses (a CPU outside the process's mask).
bool PinThisThread(int cpu);

// "0,1,2" for a list of CPUs.
std::string CpuList(const std::vector<int>& cpus);

}  // namespace brt

#endif  // BRT_SERVER_MODEL_CPU_AFFINITY_H_
