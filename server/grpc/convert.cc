#include "server/grpc/convert.h"

namespace brt {

SamplingOverrides FromProto(const v1::SamplingParams& p) {
  SamplingOverrides s;
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_min_p()) s.min_p = p.min_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_repetition_window()) s.repetition_window = p.repetition_window();
  if (p.has_seed()) s.seed = p.seed();
  s.stop.assign(p.stop().begin(), p.stop().end());
  return s;
}

void ToProto(const SamplingOverrides& s, v1::SamplingParams* out) {
  if (s.temperature) out->set_temperature(*s.temperature);
  if (s.top_k) out->set_top_k(*s.top_k);
  if (s.top_p) out->set_top_p(*s.top_p);
  if (s.min_p) out->set_min_p(*s.min_p);
  if (s.repetition_penalty) out->set_repetition_penalty(*s.repetition_penalty);
  if (s.repetition_window) out->set_repetition_window(*s.repetition_window);
  if (s.seed) out->set_seed(*s.seed);
  for (const std::string& stop : s.stop) out->add_stop(stop);
}

void ToProto(const SessionInfo& s, v1::Session* out) {
  out->set_id(s.id);
  out->set_label(s.label);
  out->set_tokens_consumed(s.tokens_consumed);
  out->set_position(s.position);
  out->set_block_offset(s.block_offset);
  out->set_state_bytes(s.state_bytes);
  out->set_device(s.device);
  out->set_created_unix_ms(s.created_unix_ms);
  out->set_last_used_unix_ms(s.last_used_unix_ms);
  ToProto(s.default_sampling, out->mutable_default_sampling());
  out->set_busy(s.busy);
  out->set_earliest_rewind_position(s.earliest_rewind_position);
}

void ToProto(const TokenScoreResult& t, v1::TokenScore* out) {
  out->set_position(t.position);
  out->set_token_id(static_cast<uint32_t>(t.token_id));
  out->set_piece(t.piece);
  out->set_byte_begin(t.byte_begin);
  out->set_byte_end(t.byte_end);
  out->set_nll(t.nll);
  for (const AlternativeResult& a : t.top) {
    v1::Alternative* alt = out->add_top();
    alt->set_token_id(static_cast<uint32_t>(a.token_id));
    alt->set_piece(a.piece);
    alt->set_logprob(a.logprob);
  }
}

void ToProto(const ScoreSummaryResult& s, v1::ScoreSummary* out) {
  out->set_tokens(s.tokens);
  out->set_bytes(s.bytes);
  out->set_total_nll(s.total_nll);
  out->set_mean_nll(s.mean_nll);
  out->set_perplexity(s.perplexity);
  out->set_bits_per_token(s.bits_per_token);
  out->set_bits_per_byte(s.bits_per_byte);
  out->set_position(s.position);
}

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStopSequence:
      return v1::FINISH_REASON_STOP_SEQUENCE;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    default:
      return v1::FINISH_REASON_UNSPECIFIED;
  }
}

absl::Time FromDeadline(std::chrono::system_clock::time_point deadline) {
  // Beyond ~100 years out means "no deadline" (gRPC reports time_point::max()).
  auto far = std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 100);
  if (deadline >= far) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

std::chrono::steady_clock::time_point SteadyDeadline(std::chrono::system_clock::time_point deadline) {
  const auto now = std::chrono::system_clock::now();
  if (deadline >= now + std::chrono::hours(24 * 365 * 100)) return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(deadline - now);
}

}  // namespace brt
