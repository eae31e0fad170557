// Conversions between brt.v1 protos and the core's plain structs. No logic beyond field mapping.
#ifndef BRT_SERVER_GRPC_CONVERT_H_
#define BRT_SERVER_GRPC_CONVERT_H_

#include <chrono>

#include "absl/time/time.h"
#include "brt/v1/brt.pb.h"
#include "server/core/engine.h"

namespace brt {

SamplingOverrides FromProto(const v1::SamplingParams& p);
void ToProto(const SamplingOverrides& s, v1::SamplingParams* out);
void ToProto(const SessionInfo& s, v1::Session* out);
void ToProto(const TokenScoreResult& t, v1::TokenScore* out);
void ToProto(const ScoreSummaryResult& s, v1::ScoreSummary* out);
v1::FinishReason ToProto(FinishReason r);
// A gRPC deadline (system_clock::time_point::max() when none) as absl::Time.
absl::Time FromDeadline(std::chrono::system_clock::time_point deadline);
// The same deadline on the steady clock (time_point::max() when there is none).
std::chrono::steady_clock::time_point SteadyDeadline(std::chrono::system_clock::time_point deadline);

}  // namespace brt

#endif  // BRT_SERVER_GRPC_CONVERT_H_
