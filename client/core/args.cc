#include "client/core/args.h"

#include <cmath>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace brt::client {
namespace {

absl::Status BadValue(const std::string& name, const std::string& value, const char* want) {
  return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", value, "' is not ", want));
}

std::string FormatDouble(double v) { return absl::StrFormat("%g", v); }

}  // namespace

ArgParser::ArgParser(std::string command, std::string synopsis, std::string description)
    : command_(std::move(command)),
      synopsis_(std::move(synopsis)),
      description_(std::move(description)) {}

void ArgParser::Add(Option option) { options_.push_back(std::move(option)); }

const ArgParser::Option* ArgParser::Find(const std::string& name) const {
  for (const Option& o : options_) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

void ArgParser::AddFlag(const std::string& name, bool* out, const std::string& help) {
  Add({name, "", help, "", true, [name, out](const std::string& v) {
         if (v.empty() || v == "true" || v == "1") {
           *out = true;
         } else if (v == "false" || v == "0") {
           *out = false;
         } else {
           return BadValue(name, v, "true or false");
         }
         return absl::OkStatus();
       }});
}

void ArgParser::AddString(const std::string& name, std::string* out, const std::string& metavar,
                          const std::string& help) {
  Add({name, metavar, help, *out, false, [out](const std::string& v) {
         *out = v;
         return absl::OkStatus();
       }});
}

void ArgParser::AddInt(const std::string& name, int64_t* out, const std::string& help) {
  Add({name, "N", help, absl::StrCat(*out), false, [name, out](const std::string& v) {
         int64_t x;
         if (!absl::SimpleAtoi(v, &x)) return BadValue(name, v, "an integer");
         *out = x;
         return absl::OkStatus();
       }});
}

void ArgParser::AddDouble(const std::string& name, double* out, const std::string& help) {
  Add({name, "X", help, FormatDouble(*out), false, [name, out](const std::string& v) {
         double x;
         if (!absl::SimpleAtod(v, &x) || !std::isfinite(x)) return BadValue(name, v, "a number");
         *out = x;
         return absl::OkStatus();
       }});
}

void ArgParser::AddOptionalUint(const std::string& name, std::optional<uint64_t>* out,
                                const std::string& help) {
  Add({name, "N", help, "", false, [name, out](const std::string& v) {
         uint64_t x;
         if (!absl::SimpleAtoi(v, &x)) return BadValue(name, v, "a non-negative integer");
         *out = x;
         return absl::OkStatus();
       }});
}

void ArgParser::AddOptionalDouble(const std::string& name, std::optional<double>* out,
                                  const std::string& help) {
  Add({name, "X", help, "", false, [name, out](const std::string& v) {
         double x;
         if (!absl::SimpleAtod(v, &x) || !std::isfinite(x)) return BadValue(name, v, "a number");
         *out = x;
         return absl::OkStatus();
       }});
}

void ArgParser::AddRepeated(const std::string& name, std::vector<std::string>* out,
                            const std::string& metavar, const std::string& help) {
  Add({name, metavar, help, "", false, [out](const std::string& v) {
         out->push_back(v);
         return absl::OkStatus();
       }});
}

void ArgParser::SetPositionals(std::vector<std::string>* out, int min, int max,
                               const std::string& help) {
  positionals_ = out;
  min_positionals_ = min;
  max_positionals_ = max;
  positional_help_ = help;
}

absl::Status ArgParser::Parse(const std::vector<std::string>& args) {
  bool options_done = false;
  std::vector<std::string> positionals;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (options_done || arg.size() < 2 || arg[0] != '-' || arg == "-") {
      positionals.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '", arg, "' (options are spelled --name)"));
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const Option* option = Find(name);
    if (option == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option --", name, " (see ", command_, " --help)"));
    }
    if (!value.has_value()) {
      if (option->is_flag) {
        value = "";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    if (absl::Status s = option->set(*value); !s.ok()) return s;
  }
  const int n = static_cast<int>(positionals.size());
  if (positionals_ == nullptr && n > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument '", positionals[0], "' (", command_, " takes none)"));
  }
  if (positionals_ != nullptr) {
    if (n < min_positionals_) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing argument: usage: ", command_, " ", synopsis_));
    }
    if (max_positionals_ >= 0 && n > max_positionals_) {
      return absl::InvalidArgumentError(absl::StrCat("too many arguments ('", positionals.back(),
                                                     "'): usage: ", command_, " ", synopsis_));
    }
    *positionals_ = std::move(positionals);
  }
  return absl::OkStatus();
}

std::string ArgParser::Help() const {
  std::string out = absl::StrCat("Usage: ", command_, " ", synopsis_, "\n\n", description_, "\n");
  if (!positional_help_.empty()) absl::StrAppend(&out, "\n", positional_help_, "\n");
  absl::StrAppend(&out, "\nOptions:\n");
  for (const Option& o : options_) {
    std::string left = absl::StrCat("  --", o.name, o.metavar.empty() ? "" : "=" + o.metavar);
    std::string help = o.help;
    if (!o.default_text.empty()) absl::StrAppend(&help, " (default: ", o.default_text, ")");
    // Help text wrapped at word boundaries into a column starting at 28.
    std::vector<std::string> lines(1);
    for (absl::string_view word : absl::StrSplit(help, ' ', absl::SkipEmpty())) {
      if (!lines.back().empty() && lines.back().size() + 1 + word.size() > 72) lines.emplace_back();
      absl::StrAppend(&lines.back(), lines.back().empty() ? "" : " ", word);
    }
    if (left.size() < 28) {
      absl::StrAppend(&out, left, std::string(28 - left.size(), ' '), lines[0], "\n");
    } else {
      absl::StrAppend(&out, left, "\n", std::string(28, ' '), lines[0], "\n");
    }
    for (size_t i = 1; i < lines.size(); ++i) {
      absl::StrAppend(&out, std::string(28, ' '), lines[i], "\n");
    }
  }
  absl::StrAppend(&out, "  -h, --help                Show this help.\n");
  return out;
}

}  // namespace brt::client
