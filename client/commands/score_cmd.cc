// brt score: scores whole files (books) in one Score call each, streamed in chunks.
#include <cstdio>
#include <memory>

#include "absl/strings/str_format.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/core/progress.h"
#include "client/core/token_table.h"
#include "client/rpc/connection.h"
#include "client/rpc/scorer.h"

namespace brt::client {
namespace {

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// To `out`: stdout, or stderr when the token rows go to stdout.
void PrintSummary(FILE* out, const std::string& name, const Summary& s) {
  std::fprintf(out, "%s: %llu tokens, %llu bytes\n", name.c_str(),
               static_cast<unsigned long long>(s.tokens), static_cast<unsigned long long>(s.bytes));
  std::fprintf(
      out, "  NLL %.4f nats/token (total %.1f)  perplexity %.3f  %.4f bits/token  %.4f bits/byte\n",
      s.mean_nll, s.total_nll, s.perplexity, s.bits_per_token, s.bits_per_byte);
}

}  // namespace

int RunScore(const Args& args) {
  ConnectionOptions conn_options;
  std::string session_id, tokens_path, tokens_format = "auto", label;
  bool json = false, keep = false, quiet = false;
  int64_t chunk_bytes = 64 * 1024;
  std::vector<std::string> files;

  ArgParser parser(
      "brt score", "[options] FILE...",
      "Scores each FILE (a book; '-' reads stdin) as one document: the text is streamed to the\n"
      "server in chunks and scored in one session, with the model's memory carried from the first\n"
      "token to the last. Prints tokens, NLL (nats), perplexity, bits per token and bits per "
      "byte.\n"
      "On a terminal a progress bar (tokens/s, ETA) is drawn on stderr.");
  parser.SetPositionals(&files, 1, -1, "FILE...  text files to score, each in its own new session");
  parser.AddFlag("json", &json,
                 "print {\"files\": [{file, session_id, summary}], \"total\": summary} as JSON "
                 "(summary fields as in brt.v1.ScoreSummary)");
  parser.AddString("tokens", &tokens_path, "PATH",
                   "write per-token rows (position, token_id, piece, byte_begin, byte_end, nll) "
                   "to PATH ('-': stdout, the summary then goes to stderr); one FILE only");
  parser.AddString("tokens_format", &tokens_format, "FMT",
                   "auto (by extension: .jsonl/.json JSON Lines, else TSV), tsv or jsonl");
  parser.AddString("session", &session_id, "ID",
                   "score into this existing session (continuing its document); one FILE only");
  parser.AddString("label", &label, "TEXT", "label of the new sessions (default: the file name)");
  parser.AddFlag("keep", &keep, "keep the new sessions instead of deleting them afterwards");
  parser.AddInt("chunk_bytes", &chunk_bytes, "bytes of text per request message");
  parser.AddFlag("quiet", &quiet, "no progress bar");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;

  if (files.size() > 1 && !session_id.empty()) {
    return UsageError("brt score", "--session takes one FILE");
  }
  if (files.size() > 1 && !tokens_path.empty()) {
    return UsageError("brt score", "--tokens takes one FILE");
  }
  if (chunk_bytes <= 0) return UsageError("brt score", "--chunk_bytes must be positive");
  if (tokens_path == "-" && json) {
    return UsageError("brt score", "--tokens=- and --json both write to stdout; pick one");
  }
  absl::StatusOr<TableFormat> format = ChooseTableFormat(tokens_format, tokens_path);
  if (!format.ok()) return UsageError("brt score", std::string(format.status().message()));
  for (const std::string& f : files) {
    if (f == "-") continue;
    if (absl::StatusOr<uint64_t> size = FileSize(f); !size.ok()) return Fail(size.status());
  }

  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());

  std::unique_ptr<TokenTableWriter> writer;
  if (!tokens_path.empty()) {
    absl::StatusOr<std::unique_ptr<TokenTableWriter>> w =
        TokenTableWriter::Open(tokens_path, *format, /*with_reset=*/false);
    if (!w.ok()) return Fail(w.status());
    writer = *std::move(w);
  }

  FILE* const summary_out = tokens_path == "-" ? stderr : stdout;
  nlohmann::json out_files = nlohmann::json::array();
  std::vector<Summary> summaries;
  for (const std::string& file : files) {
    std::string sid = session_id;
    const bool owned = sid.empty();
    if (owned) {
      absl::StatusOr<brt::v1::Session> s =
          CreateSession(**conn, label.empty() ? Basename(file) : label);
      if (!s.ok()) return Fail(s.status());
      sid = s->id();
    }
    const uint64_t total = file == "-" ? 0 : FileSize(file).value_or(0);
    ProgressBar progress(Basename(file), total, !quiet && file != "-");
    ScoreOptions options;
    options.chunk_bytes = static_cast<size_t>(chunk_bytes);
    options.omit_tokens = writer == nullptr && !progress.enabled();
    uint64_t tokens = 0;
    absl::StatusOr<Summary> summary =
        ScoreInto(**conn, sid, FileSource(file), options, [&](TokenRow&& row) {
          ++tokens;
          progress.Update(row.byte_end, tokens);
          if (writer) writer->Write(row);
        });
    progress.Finish();
    if (owned && !keep) {
      // Best effort: the session is useless after a failed score, and the error below matters more.
      absl::Status deleted = DeleteSession(**conn, sid);
      if (summary.ok() && !deleted.ok()) return Fail(deleted);
    }
    if (!summary.ok()) return Fail(summary.status());
    if (owned && keep)
      std::fprintf(stderr, "brt: %s scored into session %s\n", file.c_str(), sid.c_str());
    summaries.push_back(*summary);
    out_files.push_back(
        {{"file", file}, {"session_id", sid}, {"summary", SummaryToJson(*summary)}});
    if (!json) PrintSummary(summary_out, file, *summary);
  }
  if (writer) {
    if (absl::Status s = writer->Close(); !s.ok()) return Fail(s);
  }
  const Summary total = Total(summaries.data(), summaries.size());
  if (json) {
    PrintJson({{"files", out_files}, {"total", SummaryToJson(total)}});
  } else if (files.size() > 1) {
    PrintSummary(summary_out, "total", total);
  }
  return 0;
}

}  // namespace brt::client
