// ArgParser: the command-line options of one `brt` subcommand.
//
// Each option is registered with a pointer to the variable it fills; Parse() fills them from the
// arguments and returns INVALID_ARGUMENT naming the offending option when an argument is unknown,
// malformed or missing. Accepted forms: `--name=value`, `--name value`, `--flag`,
// `--flag=true|false`,
// `-h`/`--help`, and `--` to end options. Options and positionals may be interleaved.
// Not thread-safe; a parser is used once, on the main thread.
#ifndef BRT_CLIENT_CORE_ARGS_H_
#define BRT_CLIENT_CORE_ARGS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace brt::client {

class ArgParser {
 public:
  // `command` is e.g. "brt score"; `synopsis` follows it in the usage line ("[options] FILE...").
  ArgParser(std::string command, std::string synopsis, std::string description);

  void AddFlag(const std::string& name, bool* out, const std::string& help);
  void AddString(const std::string& name, std::string* out, const std::string& metavar,
                 const std::string& help);
  void AddInt(const std::string& name, int64_t* out, const std::string& help);
  void AddDouble(const std::string& name, double* out, const std::string& help);
  // Optional values stay std::nullopt unless the option is given.
  void AddOptionalUint(const std::string& name, std::optional<uint64_t>* out,
                       const std::string& help);
  void AddOptionalDouble(const std::string& name, std::optional<double>* out,
                         const std::string& help);
  // May be given several times; each occurrence appends.
  void AddRepeated(const std::string& name, std::vector<std::string>* out,
                   const std::string& metavar, const std::string& help);
  // Positional arguments, collected in order; Parse() checks their count is in [min, max].
  void SetPositionals(std::vector<std::string>* out, int min, int max, const std::string& help);

  absl::Status Parse(const std::vector<std::string>& args);
  // True when -h/--help was given (Parse() then returns OK without checking positionals).
  bool help_requested() const { return help_requested_; }
  std::string Help() const;

 private:
  struct Option {
    std::string name;
    std::string metavar;  // empty for flags
    std::string help;
    std::string default_text;
    bool is_flag = false;
    std::function<absl::Status(const std::string&)> set;
  };
  void Add(Option option);
  const Option* Find(const std::string& name) const;

  std::string command_, synopsis_, description_;
  std::vector<Option> options_;
  std::vector<std::string>* positionals_ = nullptr;
  int min_positionals_ = 0, max_positionals_ = 0;
  std::string positional_help_;
  bool help_requested_ = false;
};

}  // namespace brt::client

#endif  // BRT_CLIENT_CORE_ARGS_H_
