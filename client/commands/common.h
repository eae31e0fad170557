// Helpers shared by the subcommands: argument parsing with --help and usage errors, error printing,
// whole-file reads, JSON output. Main thread only.
#ifndef BRT_CLIENT_COMMANDS_COMMON_H_
#define BRT_CLIENT_COMMANDS_COMMON_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/core/args.h"
#include "nlohmann/json.hpp"

namespace brt::client {

inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInterrupted = 130;

// Parses `args`. Returns nullopt to go on, or the exit status to return now: 0 after printing the
// help for -h/--help, kExitUsage after printing the error for bad arguments.
std::optional<int> ParseOrExit(ArgParser& parser, const std::vector<std::string>& args);

// Prints "brt: CODE: message" to stderr; returns kExitError (after Ctrl-C: "brt: interrupted",
// kExitInterrupted).
int Fail(const absl::Status& status);
// Prints "brt: message" and a pointer to --help; returns kExitUsage.
int UsageError(const std::string& command, const std::string& message);

absl::StatusOr<std::string> ReadWholeFile(const std::string& path);
absl::StatusOr<uint64_t> FileSize(const std::string& path);

// Pretty-printed JSON on stdout (invalid UTF-8 replaced).
void PrintJson(const nlohmann::json& j);

}  // namespace brt::client

#endif  // BRT_CLIENT_COMMANDS_COMMON_H_
