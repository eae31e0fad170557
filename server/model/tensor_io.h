// Moving a model call's inputs and outputs between host vectors and tensors (ModelRunner's helpers).
//
// Thread safety: pure functions of their arguments.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/script.h>

#include "server/model/backend.h"

namespace brt {

// A long tensor of v on `device`.
at::Tensor LongTensor(at::ArrayRef<int64_t> v, const c10::Device& device);

// v[begin, end) without a copy.
at::ArrayRef<int64_t> Span(const std::vector<int64_t>& v, int64_t begin, int64_t end);

// Row i of a score_slots/span_slots output into r: the first len-1 target log-probs (of n-1 a row) and
// len*top_k top-k entries (of n*top_k), when asked for, and the next-token distribution.
void CopyRowOutputs(const at::Tensor& target, const at::Tensor& topk_lp, const at::Tensor& topk_id,
                    const at::Tensor& next, int64_t i, int64_t n, int64_t len, int top_k, bool all_positions,
                    ScoreBlocksResult* r);

// The four outputs of score_slots/span_slots on the host: float32 (long ids), contiguous. Only the next
// distribution when all_positions is false.
struct HostOutputs {
  at::Tensor target, topk_lp, topk_id, next;
};
HostOutputs ToHost(const c10::ivalue::Tuple& out, bool all_positions);

}  // namespace brt
