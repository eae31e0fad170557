// The reactors of brt.v1.Brt's streaming calls. A Score reactor paces reading by the core (ScoreCall's
// return values and OnInputReady) and by the replies not yet written (BrtServiceOptions), merges token
// batches into messages under --max_reply_bytes, and finishes only after the core's OnFinish. A Generate
// reactor writes one message per token (or, with GenerateRequest.stream_interval N > 1, the first token
// alone and then one message per N tokens), then the final one. Each deletes itself in OnDone and forwards
// OnCancel to the core. A call on a session that must first be restored from the snapshot store starts
// on the blocking pool (blocking_pool.h), not on gRPC's thread.
//
// Thread safety: each reactor guards its state with its own mutex; gRPC and the engine's executor call it.
#ifndef BRT_SERVER_GRPC_STREAMING_REACTORS_H_
#define BRT_SERVER_GRPC_STREAMING_REACTORS_H_

#include "brt/v1/brt.grpc.pb.h"
#include "server/auth/authenticator.h"
#include "server/core/engine.h"
#include "server/grpc/blocking_pool.h"
#include "server/grpc/brt_service.h"
#include "server/grpc/peer_limiter.h"

namespace brt {

namespace metrics {
class Metrics;
}  // namespace metrics

grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* NewScoreReactor(
    Engine* engine, grpc::CallbackServerContext* ctx, metrics::Metrics* metrics,
    const BrtServiceOptions& options, PeerLimiter* peers, const auth::Authenticator* auth,
    BlockingPool* blocking);

grpc::ServerWriteReactor<v1::GenerateResponse>* NewGenerateReactor(
    Engine* engine, grpc::CallbackServerContext* ctx, const v1::GenerateRequest& request,
    metrics::Metrics* metrics, PeerLimiter* peers, const auth::Authenticator* auth,
    BlockingPool* blocking);

}  // namespace brt

#endif  // BRT_SERVER_GRPC_STREAMING_REACTORS_H_
