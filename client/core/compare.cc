#include "client/core/compare.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/core/text.h"

namespace brt::client {
namespace {

constexpr double kLn2 = 0.69314718055994530942;

bool EndsWithNewline(const TokenRow& row) { return !row.piece.empty() && row.piece.back() == '\n'; }

nlohmann::json ExcerptToJson(const Excerpt& e) {
  return {{"before", e.before}, {"token", e.token}, {"after", e.after}};
}

}  // namespace

std::vector<Segment> CutAtNewlines(const std::vector<TokenRow>& tokens, size_t min_tokens) {
  std::vector<Segment> segments;
  size_t start = 0;
  while (start < tokens.size()) {
    size_t end = tokens.size();
    for (size_t i = start + min_tokens - 1; i < tokens.size(); ++i) {
      if (EndsWithNewline(tokens[i])) {
        end = i + 1;
        break;
      }
    }
    segments.push_back({start, end, tokens[start].byte_begin, tokens[end - 1].byte_end});
    start = end;
  }
  return segments;
}

std::vector<std::optional<uint64_t>> DistanceToPrevious(const std::vector<TokenRow>& tokens) {
  std::vector<std::optional<uint64_t>> out(tokens.size());
  std::unordered_map<uint32_t, size_t> last;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto [it, inserted] = last.try_emplace(tokens[i].token_id, i);
    if (!inserted) {
      out[i] = i - it->second;
      it->second = i;
    }
  }
  return out;
}

Excerpt MakeExcerpt(std::string_view text, uint64_t begin, uint64_t end, size_t before,
                    size_t after) {
  begin = std::min<uint64_t>(begin, text.size());
  end = std::clamp<uint64_t>(end, begin, text.size());
  const size_t from = Utf8BoundaryForward(text, begin > before ? begin - before : 0);
  const size_t to = Utf8BoundaryBackward(text, std::min<uint64_t>(end + after, text.size()));
  Excerpt e;
  e.before = ToValidUtf8(text.substr(from, begin - from));
  e.token = ToValidUtf8(text.substr(begin, end - begin));
  e.after = ToValidUtf8(text.substr(end, to > end ? to - end : 0));
  return e;
}

CompareReport Analyse(const std::string& file, std::string_view text,
                      const std::vector<TokenRow>& rows, const std::vector<Segment>& segments,
                      const CompareOptions& options) {
  CompareReport r;
  r.options = options;
  r.file = file;
  r.segments = segments.size();

  double carried = 0, reset = 0, carried_after = 0, reset_after = 0;
  const size_t first_end = segments.empty() ? rows.size() : segments[0].end_token;
  for (size_t i = 0; i < rows.size(); ++i) {
    carried += rows[i].nll;
    reset += rows[i].nll_reset.value_or(0);
    if (i >= first_end) {
      carried_after += rows[i].nll;
      reset_after += rows[i].nll_reset.value_or(0);
    }
  }
  r.carried = Summary::Of(rows.size(), text.size(), carried);
  r.reset = Summary::Of(rows.size(), text.size(), reset);
  r.carried_after_first = Summary::Of(rows.size() - first_end, 0, carried_after);
  r.reset_after_first = Summary::Of(rows.size() - first_end, 0, reset_after);

  // Segment start of each token, for "tokens since the reset".
  std::vector<size_t> segment_start(rows.size(), 0);
  for (const Segment& s : segments) {
    for (size_t i = s.first_token; i < s.end_token && i < rows.size(); ++i) {
      segment_start[i] = s.first_token;
    }
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i - segment_start[i] >= options.skip_after_reset || segment_start[i] == 0) {
      order.push_back(i);
    }
  }
  const auto gain = [&](size_t i) { return rows[i].nll_reset.value_or(0) - rows[i].nll; };
  const size_t k = std::min(options.top, order.size());
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](size_t a, size_t b) {
    return gain(a) != gain(b) ? gain(a) > gain(b) : a < b;
  });
  const std::vector<std::optional<uint64_t>> distance = DistanceToPrevious(rows);
  for (size_t j = 0; j < k; ++j) {
    const size_t i = order[j];
    Gain g;
    g.index = i;
    g.position = rows[i].position;
    g.token_id = rows[i].token_id;
    g.nll_carried = rows[i].nll;
    g.nll_reset = rows[i].nll_reset.value_or(0);
    g.gain_nats = gain(i);
    g.distance_back = distance[i];
    g.since_reset = i - segment_start[i];
    g.excerpt = MakeExcerpt(text, rows[i].byte_begin, rows[i].byte_end, options.excerpt_before,
                            options.excerpt_after);
    r.top.push_back(std::move(g));
  }
  return r;
}

nlohmann::json CompareToJson(const CompareReport& r, const std::vector<TokenRow>* rows) {
  const uint64_t segment_tokens = uint64_t{r.options.window} * r.options.reset_every;
  nlohmann::json j = {
      {"file", r.file},
      {"window", r.options.window},
      {"reset_every_blocks", r.options.reset_every},
      {"segment_min_tokens", segment_tokens},
      {"segments", r.segments},
      {"top_skips_tokens_after_reset", r.options.skip_after_reset},
      {"reset_meaning",
       "each segment of at least reset_every_blocks*window tokens (cut after the first newline "
       "past "
       "that many tokens) is scored in a new session: the recurrent state AND the attention window "
       "restart at each segment start"},
      {"tokens", r.carried.tokens},
      {"bytes", r.carried.bytes},
      {"carried", SummaryToJson(r.carried)},
      {"reset", SummaryToJson(r.reset)},
      {"carried_bits_per_token", r.carried.bits_per_token},
      {"reset_bits_per_token", r.reset.bits_per_token},
      {"after_first_segment",
       {{"tokens", r.carried_after_first.tokens},
        {"carried_bits_per_token", r.carried_after_first.bits_per_token},
        {"reset_bits_per_token", r.reset_after_first.bits_per_token}}},
  };
  nlohmann::json top = nlohmann::json::array();
  for (const Gain& g : r.top) {
    nlohmann::json t = {{"index", g.index},
                        {"position", g.position},
                        {"token_id", g.token_id},
                        {"nll_carried", g.nll_carried},
                        {"nll_reset", g.nll_reset},
                        {"gain_nats", g.gain_nats},
                        {"gain_bits", g.gain_nats / kLn2},
                        {"since_reset", g.since_reset},
                        {"excerpt", ExcerptToJson(g.excerpt)}};
    t["distance_back"] = g.distance_back ? nlohmann::json(*g.distance_back) : nlohmann::json();
    top.push_back(std::move(t));
  }
  j["top"] = std::move(top);
  if (rows != nullptr) {
    std::vector<uint64_t> position, begin, end;
    std::vector<uint32_t> id;
    std::vector<double> carried, reset;
    for (const TokenRow& row : *rows) {
      position.push_back(row.position);
      id.push_back(row.token_id);
      begin.push_back(row.byte_begin);
      end.push_back(row.byte_end);
      carried.push_back(row.nll);
      reset.push_back(row.nll_reset.value_or(0));
    }
    j["per_token"] = {{"position", position}, {"token_id", id},         {"byte_begin", begin},
                      {"byte_end", end},      {"nll_carried", carried}, {"nll_reset", reset}};
  }
  return j;
}

std::string CompareToText(const CompareReport& r) {
  const uint64_t segment_tokens = uint64_t{r.options.window} * r.options.reset_every;
  std::string out = absl::StrFormat(
      "%s: %d tokens, %d bytes; W=%d, reset every %d blocks (segments of >= %d tokens, cut at a "
      "line end): %d segments\n",
      r.file, r.carried.tokens, r.carried.bytes, r.options.window, r.options.reset_every,
      segment_tokens, r.segments);
  absl::StrAppend(&out,
                  "  (reset = each segment scored in a new session: the recurrent state and the "
                  "attention window "
                  "both restart)\n\n");
  absl::StrAppendFormat(&out, "  %-28s %8s %12s\n", "", "bits/tok", "perplexity");
  absl::StrAppendFormat(&out, "  %-28s %8.4f %12.3f\n", "state carried", r.carried.bits_per_token,
                        r.carried.perplexity);
  absl::StrAppendFormat(&out, "  %-28s %8.4f %12.3f\n",
                        absl::StrCat("state reset every ", r.options.reset_every, " blocks"),
                        r.reset.bits_per_token, r.reset.perplexity);
  absl::StrAppendFormat(&out, "  %-28s %+8.4f\n", "reset - carried",
                        r.reset.bits_per_token - r.carried.bits_per_token);
  absl::StrAppendFormat(
      &out, "  after the first segment (%d tokens): carried %.4f, reset %.4f bits/tok\n",
      r.carried_after_first.tokens, r.carried_after_first.bits_per_token,
      r.reset_after_first.bits_per_token);
  if (r.top.empty()) return out;
  absl::StrAppendFormat(&out, "\nTop %d tokens gaining from the carried state (bits)",
                        r.top.size());
  if (r.options.skip_after_reset > 0) {
    absl::StrAppendFormat(&out, ", leaving out the first %d tokens after each reset",
                          r.options.skip_after_reset);
  }
  absl::StrAppend(&out, ":\n");
  absl::StrAppendFormat(&out, "  %8s %7s %7s %7s %9s %11s  %s\n", "position", "gain", "carried",
                        "reset", "prev-occ", "since-reset", "excerpt [token]");
  for (const Gain& g : r.top) {
    const std::string prev = g.distance_back ? absl::StrCat(*g.distance_back) : "-";
    absl::StrAppendFormat(&out, "  %8d %7.3f %7.3f %7.3f %9s %11d  %s[%s]%s\n", g.position,
                          g.gain_nats / kLn2, g.nll_carried / kLn2, g.nll_reset / kLn2, prev,
                          g.since_reset, ForTerminal(g.excerpt.before),
                          ForTerminal(g.excerpt.token), ForTerminal(g.excerpt.after));
  }
  return out;
}

absl::StatusOr<TokenTable> TokenTableFromCompareJson(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("per_token")) {
    return absl::InvalidArgumentError("not a `brt compare --json` output (no \"per_token\")");
  }
  TokenTable table;
  try {
    const nlohmann::json& p = j.at("per_token");
    const auto& position = p.at("position");
    const auto& carried = p.at("nll_carried");
    const auto& reset = p.at("nll_reset");
    const size_t n = position.size();
    if (carried.size() != n || reset.size() != n) {
      return absl::InvalidArgumentError("per_token columns differ in length");
    }
    const bool has_ids = p.contains("token_id") && p["token_id"].size() == n;
    const bool has_bytes = p.contains("byte_begin") && p["byte_begin"].size() == n &&
                           p.contains("byte_end") && p["byte_end"].size() == n;
    table.rows.resize(n);
    for (size_t i = 0; i < n; ++i) {
      TokenRow& row = table.rows[i];
      row.position = position[i].get<uint64_t>();
      row.nll = carried[i].get<double>();
      row.nll_reset = reset[i].get<double>();
      if (has_ids) row.token_id = p["token_id"][i].get<uint32_t>();
      if (has_bytes) {
        row.byte_begin = p["byte_begin"][i].get<uint64_t>();
        row.byte_end = p["byte_end"][i].get<uint64_t>();
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed compare JSON: ", e.what()));
  }
  table.has_reset = !table.rows.empty();
  return table;
}

}  // namespace brt::client
