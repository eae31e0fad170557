// BatchPlanner: decides what one executor iteration feeds to the model. Pure: candidates in, rows out;
// it owns no session and calls no model, so it is unit-tested without threads (in the spirit of
// TensorFlow Serving's SharedBatchScheduler, whose policy is separate from its threads).
//
// Every active call is one candidate: its session's position (`fed`), how many tokens wait to be fed
// (`pending`), and whether more may still arrive (a Score call whose input is open). The planner puts
// each candidate in at most one of three batches:
//   decode  one token each, through the token-by-token path: a session mid-block, or at a block
//           boundary with fewer than W tokens and nothing more to come (a generated token, a one-token
//           tail), when only one token can be fed before its block ends (or spans are off);
//   span    the same sessions when 2 or more of their tokens fit before the end of their block (a
//           prompt, the end of a Score call, text that arrived mid-block): span_tokens[k] of them at once,
//           min(pending, W - fed % W);
//   score   `blocks` whole blocks each, through the block-parallel path: sessions at a block boundary
//           with at least W pending tokens.
// Invariants (tested in tests/cpp/batch_planner_test.cc):
//   - |decode| <= max_decode_batch, |score| <= max_batch_size, blocks >= 1 when score is non-empty;
//   - blocks * |score| <= max_batch_size * max_blocks_per_call (one call's latency stays bounded, so a
//     book being scored delays generation by at most one such call), and fewer rows get more blocks;
//   - every score row is at a boundary with pending >= blocks * W;
//   - |span| <= max_batch_size * max_blocks_per_call (a span is at most a block); each span row feeds
//     2 <= span_tokens <= min(pending, W - fed % W) tokens; no span rows when spans are off;
//   - when the plan has decode rows and chunked_prefill_tokens > 0, its span rows feed at most
//     max(2, that) tokens in all (chunked prefill: a prompt that arrives while other sessions generate
//     is fed over a few steps, each a bounded addition to their inter-token gap, instead of in one long
//     call that every generating session waits for; without decode rows the spans take the full row
//     cap, so an idle server prefills at full speed); a row given fewer tokens than it could feed
//     continues in a later plan, and the rotation starts after the last row that got any;
//   - at most max_block_ends decode rows whose token completes a block (fed % W == W-1; those rows also
//     run the state update, ~5 tokens' worth of work) when it is > 0, and at most one such row per
//     decode_rows_per_block_end decodable rows (at least one) when that is > 0; the others wait for a
//     later plan, served in rotation. When many sessions reach the end of a block in the same step
//     (sessions started together), their updates are spread over several steps instead of stalling one
//     step for every session; the sessions then stay out of phase. The share bounds what the updates add
//     to a step relative to its decode work (1/16 of the rows: ~1.3x a step without updates), so the
//     inter-token p99 stays near the p50 at any batch size; a held row waits at most ~16 steps, once;
//   - when more candidates are eligible than fit, successive plans rotate through them (no starvation).
//
// Thread safety: NOT thread-safe (the round-robin cursors); the executor owns one.
#ifndef BRT_SERVER_CORE_BATCH_PLANNER_H_
#define BRT_SERVER_CORE_BATCH_PLANNER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace brt {

struct PlannerOptions {
  int32_t window = 1;                // W, tokens per block
  uint32_t max_batch_size = 8;       // rows per score call
  uint32_t max_decode_batch = 64;    // rows per decode call
  uint32_t max_blocks_per_call = 2;  // blocks per row when the score batch is full
  bool spans = false;                // the backend feeds spans (ModelBackend::SupportsSpans)
  uint32_t max_block_ends = 0;       // decode rows that complete a block, per plan (0 = no limit)
  uint32_t decode_rows_per_block_end = 0;  // decodable rows per such row allowed (0 = no share limit)
  uint32_t chunked_prefill_tokens = 0;  // span tokens per plan that has decode rows (0 = no limit)
};

struct RowCandidate {
  int64_t fed = 0;             // the session's position (tokens fed, BOS included)
  size_t pending = 0;          // tokens accepted but not yet fed
  bool more_may_come = false;  // a Score call whose input is still open
};

struct BatchPlan {
  std::vector<size_t> decode;  // indices into the candidates
  std::vector<size_t> score;   // indices into the candidates
  size_t blocks = 0;           // whole blocks per score row
  std::vector<size_t> span;         // indices into the candidates
  std::vector<size_t> span_tokens;  // tokens each span row feeds, parallel to span
};

class BatchPlanner {
 public:
  explicit BatchPlanner(PlannerOptions options) : options_(options) {}
  BatchPlan Plan(const std::vector<RowCandidate>& candidates);
  const PlannerOptions& options() const { return options_; }
  // Tokens a span of this candidate would feed: min(pending, W - fed % W).
  size_t SpanTokens(const RowCandidate& c) const;

 private:
  // Rows completing a block allowed in a plan with `decodable` decode candidates (0 = no limit).
  size_t BlockEndCap(size_t decodable) const;

  PlannerOptions options_;
  size_t decode_cursor_ = 0;
  size_t block_end_cursor_ = 0;
  size_t score_cursor_ = 0;
  size_t span_cursor_ = 0;
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_BATCH_PLANNER_H_
