// BrtService: the brt.v1.Brt gRPC service, a thin callback-API layer over Engine. Handlers validate
// the request's shape, call the core, convert results to protos and statuses (status_util.h).
// Streaming calls get one reactor each, which deletes itself in OnDone and forwards OnCancel to the
// core.
//
// Calls that may block on the snapshot store or the executor run on the service's BlockingPool, never
// on gRPC's callback threads.
//
// Thread safety: gRPC calls it from many threads; all state lives in the Engine (thread-safe), the
// blocking pool (thread-safe) or in per-call reactors.
#ifndef BRT_SERVER_GRPC_BRT_SERVICE_H_
#define BRT_SERVER_GRPC_BRT_SERVICE_H_

#include <string>
#include <string_view>

#include "brt/v1/brt.grpc.pb.h"
#include "server/auth/authenticator.h"
#include "server/core/engine.h"
#include "server/grpc/blocking_pool.h"
#include "server/grpc/peer_limiter.h"

namespace brt {

namespace metrics {
class Metrics;
}  // namespace metrics

// Limits of the gRPC layer itself (the core's are in EngineOptions); each is a brt-server flag. A plain
// value: the service copies it at construction, so it needs no synchronisation.
struct BrtServiceOptions {
  // Largest serialized ScoreResponse the server sends (--max_reply_bytes): token scores that arrive
  // while a write is in flight are merged into the queued message only while it stays under this;
  // then a new message is queued. Keep it well under the clients' receive limit (gRPC's default is
  // 4 MiB). A message always holds at least one token, so one token larger than this (impossible
  // with --max_top_k <= 1000) would still be sent.
  uint64_t max_reply_bytes = uint64_t{1} << 20;
  // Serialized ScoreResponse bytes queued for one Score call (--max_pending_reply_bytes) above which
  // the server stops reading that call's input until the client has read enough of its replies:
  // a slow reader slows only its own call. Replies of input already read still queue, so the queue
  // can exceed this by the scores of one chunk (--max_chunk_bytes) plus the core's pending tokens.
  uint64_t max_pending_reply_bytes = uint64_t{16} << 20;
  // Concurrent Score/Generate calls per client address (--max_calls_per_peer); 0 = no limit.
  uint32_t max_calls_per_peer = 64;
  // The blocking pool (blocking_pool.h): threads that run calls which may wait on the snapshot store or
  // the executor (--blocking_threads), and how many such calls may wait for one (--blocking_queue;
  // UNAVAILABLE beyond).
  int blocking_threads = 8;
  size_t blocking_queue = 256;
};

class BrtService final : public v1::Brt::CallbackService {
 public:
  // engine must outlive the service (shut the grpc::Server down first). Each finished RPC is
  // recorded in `metrics` (brt_requests_total{method,code}, brt_request_duration_seconds) unless it
  // is null; it must outlive the service too.
  // auth resolves each call's tenant from its `authorization` metadata and (mTLS) its client
  // certificate; nullptr = single-tenant mode (every call acts for the unnamed tenant). Not owned;
  // must outlive the service.
  BrtService(Engine* engine, std::string version, metrics::Metrics* metrics = nullptr,
             BrtServiceOptions options = {}, const auth::Authenticator* auth = nullptr)
      : engine_(engine),
        version_(std::move(version)),
        metrics_(metrics),
        options_(options),
        peers_(options.max_calls_per_peer),
        auth_(auth),
        blocking_(options.blocking_threads, options.blocking_queue) {}

  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* ctx,
                                          const v1::CreateSessionRequest* request,
                                          v1::Session* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteSessionRequest* request,
                                          v1::DeleteSessionResponse* response) override;
  grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* Score(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* response) override;
  // Persistence. These wait for the executor to copy memory between host and device (a millisecond or
  // so) and for the snapshot store, on the blocking pool (not on gRPC's threads).
  grpc::ServerUnaryReactor* SaveSession(grpc::CallbackServerContext* ctx,
                                        const v1::SaveSessionRequest* request,
                                        v1::SaveSessionResponse* response) override;
  grpc::ServerUnaryReactor* RestoreSession(grpc::CallbackServerContext* ctx,
                                           const v1::RestoreSessionRequest* request,
                                           v1::Session* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* ctx,
                                        const v1::ForkSessionRequest* request,
                                        v1::Session* response) override;
  // Restores a checkpoint and re-reads up to a few blocks on the executor: waits on the blocking pool.
  grpc::ServerUnaryReactor* RewindSession(grpc::CallbackServerContext* ctx,
                                          const v1::RewindSessionRequest* request,
                                          v1::Session* response) override;
  grpc::ServerUnaryReactor* DeleteSnapshot(grpc::CallbackServerContext* ctx,
                                           const v1::DeleteSnapshotRequest* request,
                                           v1::DeleteSnapshotResponse* response) override;
  grpc::ServerUnaryReactor* ListSnapshots(grpc::CallbackServerContext* ctx,
                                          const v1::ListSnapshotsRequest* request,
                                          v1::ListSnapshotsResponse* response) override;

  // Waits until no call runs or waits on the blocking pool. Call it after the grpc::Server has shut
  // down and before destroying the engine: work the pool took before the shutdown may still use it.
  void WaitForBlockingWork() { blocking_.WaitIdle(); }

 private:
  // A unary call whose work may block (store I/O, the executor): admits it here, then runs
  // `work(tenant)` -> absl::Status on the blocking pool under the call's deadline (ScopedStoreDeadline),
  // and finishes the call with its status. UNAVAILABLE at once when the pool's queue is full;
  // CANCELLED / DEADLINE_EXCEEDED without running `work` when the call ended while it waited.
  template <typename Work>
  grpc::ServerUnaryReactor* Offload(grpc::CallbackServerContext* ctx, std::string_view method,
                                    std::string_view session_id, Work work);

  Engine* engine_;
  std::string version_;
  metrics::Metrics* metrics_;
  const BrtServiceOptions options_;
  PeerLimiter peers_;  // Score/Generate calls per client address
  const auth::Authenticator* const auth_;  // nullptr = single-tenant mode
  BlockingPool blocking_;  // last: destroyed first, after gRPC has finished every call
};

}  // namespace brt

#endif  // BRT_SERVER_GRPC_BRT_SERVICE_H_
