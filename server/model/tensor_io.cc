#include "server/model/tensor_io.h"

namespace brt {

at::Tensor LongTensor(at::ArrayRef<int64_t> v, const c10::Device& device) {
  return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(device);
}

at::ArrayRef<int64_t> Span(const std::vector<int64_t>& v, int64_t begin, int64_t end) {
  return at::ArrayRef<int64_t>(v.data() + begin, static_cast<size_t>(end - begin));
}

void CopyRowOutputs(const at::Tensor& target, const at::Tensor& topk_lp, const at::Tensor& topk_id,
                    const at::Tensor& next, int64_t i, int64_t n, int64_t len, int top_k, bool all_positions,
                    ScoreBlocksResult* r) {
  if (all_positions) {
    const float* tp = target.data_ptr<float>() + i * (n - 1);
    r->target_logprobs.assign(tp, tp + (len - 1));
    if (top_k > 0) {
      const float* kp = topk_lp.data_ptr<float>() + i * n * top_k;
      r->topk_logprobs.assign(kp, kp + len * top_k);
      const int64_t* ip = topk_id.data_ptr<int64_t>() + i * n * top_k;
      r->topk_ids.assign(ip, ip + len * top_k);
    }
  }
  const int64_t v = next.size(1);
  const float* np = next.data_ptr<float>() + i * v;
  r->next_logprobs.assign(np, np + v);
}

HostOutputs ToHost(const c10::ivalue::Tuple& out, bool all_positions) {
  const auto& e = out.elements();
  HostOutputs h;
  h.next = e[3].toTensor().to(at::kCPU, at::kFloat).contiguous();
  if (all_positions) {
    h.target = e[0].toTensor().to(at::kCPU, at::kFloat).contiguous();
    h.topk_lp = e[1].toTensor().to(at::kCPU, at::kFloat).contiguous();
    h.topk_id = e[2].toTensor().to(at::kCPU, at::kLong).contiguous();
  }
  return h;
}

}  // namespace brt
