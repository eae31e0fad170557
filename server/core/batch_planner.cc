#include "server/core/batch_planner.h"

#include <algorithm>

namespace brt {

size_t BatchPlanner::SpanTokens(const RowCandidate& c) const {
  const size_t room = static_cast<size_t>(options_.window - c.fed % options_.window);
  return std::min(c.pending, room);
}

size_t BatchPlanner::BlockEndCap(size_t decodable) const {
  size_t cap = options_.max_block_ends;  // 0: no limit
  if (options_.decode_rows_per_block_end > 0) {
    const size_t share = std::max<size_t>(1, decodable / options_.decode_rows_per_block_end);
    cap = cap == 0 ? share : std::min(cap, share);
  }
  return cap;
}

BatchPlan BatchPlanner::Plan(const std::vector<RowCandidate>& candidates) {
  BatchPlan plan;
  const size_t w = static_cast<size_t>(options_.window);
  std::vector<size_t> decodable, spannable, scorable;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const RowCandidate& c = candidates[i];
    if (c.pending == 0) continue;
    const bool at_boundary = c.fed % options_.window == 0;
    if (!at_boundary || (c.pending < w && !c.more_may_come)) {
      if (options_.spans && SpanTokens(c) >= 2) {
        spannable.push_back(i);
      } else {
        decodable.push_back(i);
      }
    } else if (c.pending >= w) {
      scorable.push_back(i);
    }
  }
  // Rows whose token completes a block: at most BlockEndCap of them, in rotation.
  if (const size_t cap = BlockEndCap(decodable.size()); cap > 0) {
    std::vector<size_t> others, ends;
    for (size_t i : decodable) {
      (candidates[i].fed % options_.window == options_.window - 1 ? ends : others).push_back(i);
    }
    if (ends.size() > cap) {
      const size_t n = ends.size();
      const size_t first = block_end_cursor_ % n;
      for (size_t k = 0; k < cap; ++k) others.push_back(ends[(first + k) % n]);
      block_end_cursor_ = first + cap;
      decodable = std::move(others);
    }
  }
  // Decode: up to max_decode_batch rows, starting where the last plan stopped.
  if (!decodable.empty()) {
    const size_t n = decodable.size();
    const size_t first = decode_cursor_ % n;
    const size_t take = std::min<size_t>(n, options_.max_decode_batch);
    for (size_t k = 0; k < take; ++k) plan.decode.push_back(decodable[(first + k) % n]);
    decode_cursor_ = first + take;
  }
  // Spans: up to a full score call's token budget in rows (each row is at most one block).
  if (!spannable.empty()) {
    const size_t n = spannable.size();
    const size_t first = span_cursor_ % n;
    const size_t cap = static_cast<size_t>(options_.max_batch_size) * options_.max_blocks_per_call;
    const size_t take = std::min<size_t>(n, std::max<size_t>(1, cap));
    // Chunked prefill: with decode rows in the plan, the spans share a token budget.
    const bool budgeted = !plan.decode.empty() && options_.chunked_prefill_tokens > 0;
    size_t budget = budgeted ? std::max<size_t>(2, options_.chunked_prefill_tokens) : 0;
    size_t taken = 0;
    for (; taken < take; ++taken) {
      const size_t i = spannable[(first + taken) % n];
      size_t tokens = SpanTokens(candidates[i]);
      if (budgeted) {
        if (budget < 2) break;
        tokens = std::min(tokens, budget);
        budget -= tokens;
      }
      plan.span.push_back(i);
      plan.span_tokens.push_back(tokens);
    }
    span_cursor_ = first + taken;
  }
  if (scorable.empty()) return plan;
  const size_t n = scorable.size();
  const size_t first = score_cursor_ % n;
  const size_t take = std::min<size_t>(n, options_.max_batch_size);
  score_cursor_ = first + take;
  // A call runs at most max_batch_size * max_blocks_per_call blocks in all, shared by its rows.
  size_t blocks = std::max<size_t>(
      1, static_cast<size_t>(options_.max_batch_size) * options_.max_blocks_per_call / take);
  for (size_t k = 0; k < take; ++k) {
    const size_t i = scorable[(first + k) % n];
    blocks = std::min(blocks, candidates[i].pending / w);
    plan.score.push_back(i);
  }
  plan.blocks = blocks;
  return plan;
}

}  // namespace brt
