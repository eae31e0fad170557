#include "client/commands/common.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "client/rpc/interrupt.h"

namespace brt::client {

std::optional<int> ParseOrExit(ArgParser& parser, const std::vector<std::string>& args) {
  absl::Status s = parser.Parse(args);
  if (!s.ok()) {
    std::fprintf(stderr, "brt: %s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  if (parser.help_requested()) {
    std::fputs(parser.Help().c_str(), stdout);
    return 0;
  }
  return std::nullopt;
}

int Fail(const absl::Status& status) {
  std::fflush(stdout);
  if (Interrupts::Requested()) {
    std::fprintf(stderr, "brt: interrupted\n");
    return kExitInterrupted;
  }
  std::fprintf(stderr, "brt: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return kExitError;
}

int UsageError(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "brt: %s (see %s --help)\n", message.c_str(), command.c_str());
  return kExitUsage;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("reading ", path, " failed"));
  return ss.str();
}

absl::StatusOr<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a text file"));
  }
  return static_cast<uint64_t>(st.st_size);
}

void PrintJson(const nlohmann::json& j) {
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
}

}  // namespace brt::client
