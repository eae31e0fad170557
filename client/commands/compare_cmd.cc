// brt compare: the carried-versus-reset study of one book (see client/core/compare.h for what
// "reset" means here and why the segments are cut at line ends).
#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/core/compare.h"
#include "client/core/progress.h"
#include "client/rpc/connection.h"
#include "client/rpc/scorer.h"

namespace brt::client {
namespace {

// Scores `text` in a new session that is deleted afterwards; returns the token rows.
absl::StatusOr<std::vector<TokenRow>> ScoreInNewSession(
    Connection& conn, std::string_view text, const std::string& label, size_t chunk_bytes,
    const std::function<void(const TokenRow&)>& seen) {
  absl::StatusOr<brt::v1::Session> session = CreateSession(conn, label);
  if (!session.ok()) return session.status();
  std::vector<TokenRow> rows;
  ScoreOptions options;
  options.chunk_bytes = chunk_bytes;
  absl::StatusOr<Summary> summary =
      ScoreInto(conn, session->id(), StringSource(text), options, [&](TokenRow&& row) {
        if (seen) seen(row);
        rows.push_back(std::move(row));
      });
  absl::Status deleted = DeleteSession(conn, session->id());
  if (!summary.ok()) return summary.status();
  if (!deleted.ok()) return deleted;
  return rows;
}

// Checks the reset run of one segment scored the carried run's tokens and copies its NLLs over.
absl::Status Merge(const Segment& seg, size_t index, const std::vector<TokenRow>& seg_rows,
                   std::vector<TokenRow>& rows) {
  const size_t n = seg.end_token - seg.first_token;
  if (seg_rows.size() != n) {
    return absl::FailedPreconditionError(
        absl::StrCat("segment ", index, " (bytes ", seg.byte_begin, "..", seg.byte_end, ") gave ",
                     seg_rows.size(), " tokens scored on its own but ", n,
                     " in the whole book: the tokenizer merged across the cut"));
  }
  for (size_t k = 0; k < n; ++k) {
    TokenRow& row = rows[seg.first_token + k];
    const TokenRow& r = seg_rows[k];
    if (r.token_id != row.token_id || seg.byte_begin + r.byte_begin != row.byte_begin) {
      return absl::FailedPreconditionError(absl::StrCat("segment ", index, ": token ", k,
                                                        " differs from the whole-book run (id ",
                                                        r.token_id, " vs ", row.token_id, ")"));
    }
    row.nll_reset = r.nll;
  }
  return absl::OkStatus();
}

}  // namespace

int RunCompare(const Args& args) {
  ConnectionOptions conn_options;
  int64_t reset_every = 8, top = 20, parallel = 2, chunk_bytes = 64 * 1024, excerpt_bytes = 60;
  int64_t skip_after_reset = -1;
  bool json = false, per_token = true, quiet = false;
  std::string tokens_path, tokens_format = "auto";
  std::vector<std::string> files;

  ArgParser parser(
      "brt compare", "[options] FILE",
      "The paper's qualitative study: scores FILE twice and compares.\n"
      "  carried: one session reads the whole book; the recurrent state and the attention window\n"
      "           carry from the first token to the last.\n"
      "  reset:   the book is cut into segments of at least N*W tokens (N = --reset_every blocks "
      "of\n"
      "           W tokens; each cut just after the first newline past that many tokens) and "
      "every\n"
      "           segment is scored in a NEW session. The server has no call that resets only the\n"
      "           recurrent state, so at each segment start BOTH the recurrent state and the\n"
      "           attention window restart.\n"
      "Cutting at line ends keeps the tokens identical (checked), so both figures are over the "
      "same\n"
      "tokens. Reports bits per token of both runs and the tokens that gain most from the carried\n"
      "state, each with an excerpt, the distance back to the token's previous occurrence "
      "(prev-occ,\n"
      "in tokens) and its distance from the last reset (since-reset, in tokens).");
  parser.SetPositionals(&files, 1, 1, "FILE  the text (book) to study");
  parser.AddInt("reset_every", &reset_every, "N: reset the state every N blocks");
  parser.AddInt("top", &top, "how many top-gaining tokens to list");
  parser.AddInt("skip_after_reset", &skip_after_reset,
                "leave tokens fewer than this many tokens after a reset out of the top list (there "
                "the reset run lacks even local context); -1: W. The figures count every token");
  parser.AddInt("excerpt_bytes", &excerpt_bytes, "bytes of context before each listed token");
  parser.AddFlag("json", &json,
                 "print the report as JSON, with per-token columns (\"per_token\") for brt plot");
  parser.AddFlag(
      "per_token", &per_token,
      "include \"per_token\" columns in --json output (on; --per_token=false drops them)");
  parser.AddString("tokens", &tokens_path, "PATH",
                   "write per-token rows with nll and nll_reset (nats) to PATH");
  parser.AddString("tokens_format", &tokens_format, "FMT", "auto, tsv or jsonl");
  parser.AddInt("parallel", &parallel, "segments scored at once (concurrent sessions)");
  parser.AddInt("chunk_bytes", &chunk_bytes, "bytes of text per request message");
  parser.AddFlag("quiet", &quiet, "no progress bar");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;
  if (reset_every <= 0) return UsageError("brt compare", "--reset_every must be positive");
  if (top < 0) return UsageError("brt compare", "--top must be >= 0");
  if (parallel <= 0) return UsageError("brt compare", "--parallel must be positive");
  if (chunk_bytes <= 0) return UsageError("brt compare", "--chunk_bytes must be positive");
  if (excerpt_bytes < 0) return UsageError("brt compare", "--excerpt_bytes must be >= 0");
  absl::StatusOr<TableFormat> format = ChooseTableFormat(tokens_format, tokens_path);
  if (!format.ok()) return UsageError("brt compare", std::string(format.status().message()));

  const std::string& file = files[0];
  if (absl::StatusOr<uint64_t> size = FileSize(file); !size.ok()) return Fail(size.status());
  absl::StatusOr<std::string> text = ReadWholeFile(file);
  if (!text.ok()) return Fail(text.status());

  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());
  absl::StatusOr<brt::v1::ServerInfo> info = GetServerInfo(**conn);
  if (!info.ok()) return Fail(info.status());
  const uint32_t window = info->model().window();
  if (window == 0) return Fail(absl::InternalError("server reports model window W = 0"));

  // 1. Carried: the whole book in one session.
  std::vector<TokenRow> rows;
  {
    ProgressBar progress("carried", text->size(), !quiet);
    uint64_t n = 0;
    absl::StatusOr<std::vector<TokenRow>> r =
        ScoreInNewSession(**conn, *text, "brt compare (carried)", chunk_bytes,
                          [&](const TokenRow& row) { progress.Update(row.byte_end, ++n); });
    if (!r.ok()) return Fail(r.status());
    rows = *std::move(r);
  }
  if (rows.empty()) return Fail(absl::InvalidArgumentError(absl::StrCat(file, " has no tokens")));

  // 2. Reset: segments of >= N*W tokens, each in a new session, `parallel` at a time.
  const std::vector<Segment> segments =
      CutAtNewlines(rows, static_cast<size_t>(reset_every) * window);
  {
    ProgressBar progress("reset", text->size(), !quiet);
    absl::Mutex mu;
    absl::Status first_error;
    uint64_t bytes_done = 0, tokens_done = 0;
    std::atomic<size_t> next{0};
    const auto worker = [&] {
      while (true) {
        const size_t i = next.fetch_add(1);
        if (i >= segments.size()) return;
        {
          absl::MutexLock lock(&mu);
          if (!first_error.ok()) return;
        }
        const Segment& seg = segments[i];
        absl::StatusOr<std::vector<TokenRow>> r = ScoreInNewSession(
            **conn, std::string_view(*text).substr(seg.byte_begin, seg.byte_end - seg.byte_begin),
            absl::StrCat("brt compare (reset segment ", i, ")"), chunk_bytes, nullptr);
        absl::MutexLock lock(&mu);
        absl::Status s = r.ok() ? Merge(seg, i, *r, rows) : r.status();
        if (!s.ok()) {
          if (first_error.ok()) first_error = s;
          return;
        }
        bytes_done += seg.byte_end - seg.byte_begin;
        tokens_done += seg.end_token - seg.first_token;
        progress.Update(bytes_done, tokens_done);
      }
    };
    std::vector<std::thread> threads;
    for (int64_t t = 0; t < std::min<int64_t>(parallel, segments.size()); ++t) {
      threads.emplace_back(worker);
    }
    for (std::thread& t : threads) t.join();
    if (!first_error.ok()) return Fail(first_error);
  }

  CompareOptions options;
  options.window = window;
  options.reset_every = static_cast<uint32_t>(reset_every);
  options.top = static_cast<size_t>(top);
  options.skip_after_reset = skip_after_reset < 0 ? window : static_cast<size_t>(skip_after_reset);
  options.excerpt_before = static_cast<size_t>(excerpt_bytes);
  options.excerpt_after = static_cast<size_t>(excerpt_bytes) / 3;
  const CompareReport report = Analyse(file, *text, rows, segments, options);

  if (!tokens_path.empty()) {
    absl::StatusOr<std::unique_ptr<TokenTableWriter>> w =
        TokenTableWriter::Open(tokens_path, *format, /*with_reset=*/true);
    if (!w.ok()) return Fail(w.status());
    for (const TokenRow& row : rows) (*w)->Write(row);
    if (absl::Status s = (*w)->Close(); !s.ok()) return Fail(s);
  }
  if (json) {
    PrintJson(CompareToJson(report, per_token ? &rows : nullptr));
  } else {
    std::fputs(CompareToText(report).c_str(), stdout);
  }
  return 0;
}

}  // namespace brt::client
