// The carried-versus-reset study behind `brt compare` (the paper's qualitative study), minus the
// RPCs.
//
// A book is scored twice:
//   carried: one session reads the whole book, so the recurrent state and the sliding attention
//   window
//            carry from the first token to the last;
//   reset:   the book is cut into segments of at least N*W tokens and each segment is scored in a
//   NEW
//            session. At each segment start both the recurrent state and the attention window
//            restart (the server has no "reset only the state" call), so a token sees only the
//            earlier tokens of its own segment.
// Cuts fall just after a newline (the tokenizer never merges across one), found with the carried
// run's byte offsets, so both runs score the same tokens. This file cuts the segments and analyses
// the two NLL sequences: figures over the same tokens, and the tokens that gain most from the
// carried state, with an excerpt and the distance back to the token's previous occurrence. Pure
// functions over values; thread-safe.
#ifndef BRT_CLIENT_CORE_COMPARE_H_
#define BRT_CLIENT_CORE_COMPARE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/core/summary.h"
#include "client/core/token_table.h"
#include "nlohmann/json.hpp"

namespace brt::client {

// Tokens [first_token, end_token) of the carried run, text bytes [byte_begin, byte_end).
struct Segment {
  size_t first_token = 0;
  size_t end_token = 0;
  uint64_t byte_begin = 0;
  uint64_t byte_end = 0;
};

// Cuts `tokens` (the carried run, in order, byte offsets into the scored text) into segments: each
// runs from its first token through the first token ending with '\n' at or after its min_tokens-th
// token (or to the end). So every segment but the last has at least min_tokens tokens and ends at a
// line end. REQUIRES: min_tokens > 0.
std::vector<Segment> CutAtNewlines(const std::vector<TokenRow>& tokens, size_t min_tokens);

// For each token, how many tokens back the same token id last occurred (nullopt: first occurrence).
std::vector<std::optional<uint64_t>> DistanceToPrevious(const std::vector<TokenRow>& tokens);

struct Excerpt {
  std::string before, token, after;  // valid UTF-8
};
// Up to `before`/`after` bytes of context around [begin, end) of `text`, cut at UTF-8 boundaries.
Excerpt MakeExcerpt(std::string_view text, uint64_t begin, uint64_t end, size_t before,
                    size_t after);

struct Gain {
  size_t index = 0;  // into the token rows
  uint64_t position = 0;
  uint32_t token_id = 0;
  double nll_carried = 0, nll_reset = 0;  // nats
  double gain_nats = 0;                   // nll_reset - nll (positive: the carried state helped)
  std::optional<uint64_t> distance_back;
  uint64_t since_reset = 0;  // tokens between the segment's start and this token
  Excerpt excerpt;
};

struct CompareOptions {
  uint32_t window = 0;       // W, from the server
  uint32_t reset_every = 0;  // N blocks
  size_t top = 20;
  // The top list leaves out tokens fewer than this many tokens after a reset (there the reset run
  // lacks even the local attention context, and such gains say nothing about the recurrent state).
  // The figures count every token.
  size_t skip_after_reset = 0;
  size_t excerpt_before = 60, excerpt_after = 20;
};

struct CompareReport {
  CompareOptions options;
  std::string file;
  size_t segments = 0;
  Summary carried, reset;                          // over all tokens (the same tokens in both)
  Summary carried_after_first, reset_after_first;  // tokens after the first segment (bytes 0)
  std::vector<Gain> top;
};

// Builds the report. REQUIRES: every row has nll_reset; `segments` come from CutAtNewlines(rows).
CompareReport Analyse(const std::string& file, std::string_view text,
                      const std::vector<TokenRow>& rows, const std::vector<Segment>& segments,
                      const CompareOptions& options);

// The report as JSON; with `rows`, adds "per_token" columns (position, token_id, byte_begin,
// byte_end, nll_carried, nll_reset) that `brt plot` reads.
nlohmann::json CompareToJson(const CompareReport& report, const std::vector<TokenRow>* rows);
// The report for a terminal.
std::string CompareToText(const CompareReport& report);

// Reads "per_token" columns of CompareToJson() back as token rows (with nll_reset).
absl::StatusOr<TokenTable> TokenTableFromCompareJson(const nlohmann::json& j);

}  // namespace brt::client

#endif  // BRT_CLIENT_CORE_COMPARE_H_
