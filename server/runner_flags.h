// The brt-server flags that shape the model runner (device and dtype, intra-op threads and row shards,
// weight packing, freezing, the native decoder and its instruction set, the session memory pools),
// defined in runner_flags.cc and listed by `brt-server --help` after main.cc's; the ModelRunnerOptions
// they give; and the start-up log's account of what the runner ended up running.
//
// Thread safety: free functions; RunnerOptionsFromFlags reads the flags (after absl::ParseCommandLine).
#ifndef BRT_SERVER_RUNNER_FLAGS_H_
#define BRT_SERVER_RUNNER_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/model/model_runner.h"

namespace brt::startup {

// The options for ModelRunner::Create from the flags; max_slots is --max_sessions (main.cc's: the engine
// reads it too). InvalidArgument naming the flag, the value and the choices for a value out of range.
absl::StatusOr<ModelRunnerOptions> RunnerOptionsFromFlags(const std::string& model_path,
                                                          const std::string& tokenizer_sha256, uint32_t max_slots);

// Prints to stderr, one line each, the choices the runner could not honour and why (freezing, the native
// decode step, packing).
void LogRunnerFallbacks(const ModelRunner& runner);

// ", XNNPACK packed weights, frozen, native decode step (team, avx512)": what runs, for the start-up line.
std::string DescribeRunner(const ModelRunner& runner);

}  // namespace brt::startup

#endif  // BRT_SERVER_RUNNER_FLAGS_H_
