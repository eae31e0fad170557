#include "client/core/token_table.h"

#include <iostream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/core/text.h"
#include "nlohmann/json.hpp"

namespace brt::client {
namespace {

constexpr const char* kColumns[] = {"position",   "token_id", "piece",
                                    "byte_begin", "byte_end", "nll"};

// %.9g round-trips a float (the API's NLLs are floats).
std::string FormatNll(double v) { return absl::StrFormat("%.9g", v); }

absl::Status RowError(const std::string& name, size_t line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(name, ":", line, ": ", what));
}

absl::StatusOr<TokenTable> ParseJsonl(const std::string& content, const std::string& name) {
  TokenTable table;
  table.has_reset = true;
  size_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return RowError(name, line_no, "not a JSON object");
    if (!j.contains("position") || !j.contains("nll")) {
      return RowError(name, line_no, "a token row needs \"position\" and \"nll\"");
    }
    TokenRow row;
    try {
      row.position = j.at("position").get<uint64_t>();
      row.token_id = j.value("token_id", 0u);
      row.piece = j.value("piece", std::string());
      row.byte_begin = j.value("byte_begin", uint64_t{0});
      row.byte_end = j.value("byte_end", uint64_t{0});
      row.nll = j.at("nll").get<double>();
      if (j.contains("nll_reset")) row.nll_reset = j.at("nll_reset").get<double>();
    } catch (const nlohmann::json::exception& e) {
      return RowError(name, line_no, e.what());
    }
    table.has_reset = table.has_reset && row.nll_reset.has_value();
    table.rows.push_back(std::move(row));
  }
  if (table.rows.empty()) table.has_reset = false;
  return table;
}

absl::StatusOr<TokenTable> ParseTsv(const std::string& content, const std::string& name) {
  TokenTable table;
  std::vector<std::string> header;
  size_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    if (header.empty()) {
      header = fields;
      for (size_t i = 0; i < 6; ++i) {
        if (header.size() <= i || header[i] != kColumns[i]) {
          return RowError(name, line_no,
                          "not a token table (the header must start with position, token_id, "
                          "piece, byte_begin, byte_end, nll)");
        }
      }
      table.has_reset = header.size() > 6 && header[6] == "nll_reset";
      continue;
    }
    if (fields.size() != header.size()) {
      return RowError(name, line_no,
                      absl::StrCat("expected ", header.size(), " fields, got ", fields.size()));
    }
    TokenRow row;
    absl::StatusOr<std::string> piece = UnescapeTsvField(fields[2]);
    if (!piece.ok()) return RowError(name, line_no, std::string(piece.status().message()));
    row.piece = *std::move(piece);
    double reset = 0;
    if (!absl::SimpleAtoi(fields[0], &row.position) ||
        !absl::SimpleAtoi(fields[1], &row.token_id) ||
        !absl::SimpleAtoi(fields[3], &row.byte_begin) ||
        !absl::SimpleAtoi(fields[4], &row.byte_end) || !absl::SimpleAtod(fields[5], &row.nll) ||
        (table.has_reset && !absl::SimpleAtod(fields[6], &reset))) {
      return RowError(name, line_no, "malformed number");
    }
    if (table.has_reset) row.nll_reset = reset;
    table.rows.push_back(std::move(row));
  }
  if (header.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": empty token table"));
  return table;
}

}  // namespace

absl::StatusOr<TableFormat> ChooseTableFormat(const std::string& requested,
                                              const std::string& path) {
  if (requested == "tsv") return TableFormat::kTsv;
  if (requested == "jsonl") return TableFormat::kJsonl;
  if (requested != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokens_format: '", requested, "' is not one of auto, tsv, jsonl"));
  }
  const auto ends_with = [&](const std::string& suffix) {
    return path.size() >= suffix.size() &&
           path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".jsonl") || ends_with(".json") ? TableFormat::kJsonl : TableFormat::kTsv;
}

TokenTableWriter::TokenTableWriter(std::string path, TableFormat format, bool with_reset)
    : path_(std::move(path)), format_(format), with_reset_(with_reset) {}

absl::StatusOr<std::unique_ptr<TokenTableWriter>> TokenTableWriter::Open(const std::string& path,
                                                                         TableFormat format,
                                                                         bool with_reset) {
  std::unique_ptr<TokenTableWriter> w(new TokenTableWriter(path, format, with_reset));
  if (path == "-") {
    w->out_ = &std::cout;
  } else {
    w->file_.open(path, std::ios::binary | std::ios::trunc);
    if (!w->file_) {
      return absl::PermissionDeniedError(absl::StrCat("cannot write the token table to ", path));
    }
    w->out_ = &w->file_;
  }
  if (format == TableFormat::kTsv) {
    *w->out_ << "position\ttoken_id\tpiece\tbyte_begin\tbyte_end\tnll"
             << (with_reset ? "\tnll_reset\n" : "\n");
  }
  return w;
}

void TokenTableWriter::Write(const TokenRow& row) {
  if (format_ == TableFormat::kTsv) {
    *out_ << row.position << '\t' << row.token_id << '\t' << EscapeTsvField(row.piece) << '\t'
          << row.byte_begin << '\t' << row.byte_end << '\t' << FormatNll(row.nll);
    if (with_reset_) *out_ << '\t' << FormatNll(row.nll_reset.value_or(0));
    *out_ << '\n';
    return;
  }
  nlohmann::json j = {{"position", row.position},        {"token_id", row.token_id},
                      {"piece", ToValidUtf8(row.piece)}, {"byte_begin", row.byte_begin},
                      {"byte_end", row.byte_end},        {"nll", row.nll}};
  if (with_reset_) j["nll_reset"] = row.nll_reset.value_or(0);
  *out_ << j.dump() << '\n';
}

absl::Status TokenTableWriter::Close() {
  out_->flush();
  if (!*out_)
    return absl::DataLossError(absl::StrCat("writing the token table to ", path_, " failed"));
  if (file_.is_open()) file_.close();
  return absl::OkStatus();
}

absl::StatusOr<TokenTable> ParseTokenTable(const std::string& content, const std::string& name) {
  const size_t first = content.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && content[first] == '{') return ParseJsonl(content, name);
  return ParseTsv(content, name);
}

absl::StatusOr<TokenTable> ReadTokenTable(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseTokenTable(ss.str(), path);
}

}  // namespace brt::client
