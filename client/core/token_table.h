// Per-token tables: what `brt score --tokens` and `brt compare --tokens` write and `brt plot`
// reads.
//
// Columns: position, token_id, piece, byte_begin, byte_end, nll (nats), and for compare also
// nll_reset (nats, the same token scored with the state reset). Two formats:
//   TSV:         a header row with the column names, then one row per token; `piece` escaped with
//                EscapeTsvField() (lossless).
//   JSON Lines:  one object per token with the column names as keys; `piece` as UTF-8 text with
//   invalid
//                bytes as U+FFFD (the byte offsets stay exact).
// The writer streams rows as they arrive; not thread-safe.
#ifndef BRT_CLIENT_CORE_TOKEN_TABLE_H_
#define BRT_CLIENT_CORE_TOKEN_TABLE_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace brt::client {

struct TokenRow {
  uint64_t position = 0;
  uint32_t token_id = 0;
  std::string piece;
  uint64_t byte_begin = 0;
  uint64_t byte_end = 0;
  double nll = 0;                   // nats
  std::optional<double> nll_reset;  // nats; compare tables only
};

enum class TableFormat { kTsv, kJsonl };

// "tsv" or "jsonl" by name; "auto" picks by the path's extension (.jsonl/.json: JSON Lines, else
// TSV).
absl::StatusOr<TableFormat> ChooseTableFormat(const std::string& requested,
                                              const std::string& path);

class TokenTableWriter {
 public:
  // Opens `path` for writing ("-" is stdout). `with_reset` adds the nll_reset column.
  static absl::StatusOr<std::unique_ptr<TokenTableWriter>> Open(const std::string& path,
                                                                TableFormat format,
                                                                bool with_reset);
  void Write(const TokenRow& row);
  // Flushes and reports a write error, if any.
  absl::Status Close();

 private:
  TokenTableWriter(std::string path, TableFormat format, bool with_reset);
  std::string path_;
  TableFormat format_;
  bool with_reset_;
  std::ofstream file_;
  std::ostream* out_ = nullptr;
};

// A whole table read back. `has_reset` tells whether every row has nll_reset.
struct TokenTable {
  std::vector<TokenRow> rows;
  bool has_reset = false;
};

// Reads a table in either format (detected from the content).
absl::StatusOr<TokenTable> ReadTokenTable(const std::string& path);
absl::StatusOr<TokenTable> ParseTokenTable(const std::string& content, const std::string& name);

}  // namespace brt::client

#endif  // BRT_CLIENT_CORE_TOKEN_TABLE_H_
