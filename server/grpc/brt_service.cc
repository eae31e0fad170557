#include "server/grpc/brt_service.h"

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/grpc/call_auth.h"
#include "server/grpc/call_record.h"
#include "server/grpc/streaming_reactors.h"
#include "server/grpc/convert.h"
#include "server/grpc/status_util.h"
#include "server/metrics/metrics.h"
#include "server/persistence/snapshot_store.h"

namespace brt {
namespace {

[[maybe_unused]] grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx,
                                                 const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, const absl::Status& status,
                                const RpcRecord& rpc) {
  grpc::Status g = ToGrpcStatus(status);
  rpc.Finished(g);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(g));
  return reactor;
}

}  // namespace

template <typename Work>
grpc::ServerUnaryReactor* BrtService::Offload(grpc::CallbackServerContext* ctx, std::string_view method,
                                              std::string_view session_id, Work work) {
  RpcRecord rpc(metrics_, method);
  auto tenant = AdmitCall(*ctx, auth_, rpc, session_id);
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  const auto deadline = SteadyDeadline(ctx->deadline());
  // Taken once: each DefaultReactor() call makes a new reactor in place.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const bool queued = blocking_.TrySubmit([ctx, reactor, rpc, tenant = *std::move(tenant), deadline,
                                           work = std::move(work)]() mutable {
    absl::Status status;
    if (ctx->IsCancelled()) {
      status = absl::CancelledError("the call was cancelled while it waited for a blocking-pool thread");
    } else if (std::chrono::steady_clock::now() >= deadline) {
      status = absl::DeadlineExceededError(
          "the call's deadline passed while it waited for a blocking-pool thread (--blocking_threads)");
    } else {
      persistence::ScopedStoreDeadline store_deadline(deadline);
      status = work(tenant);
    }
    grpc::Status g = ToGrpcStatus(status);
    rpc.Finished(g);
    reactor->Finish(std::move(g));
  });
  if (!queued) {
    grpc::Status g = ToGrpcStatus(blocking_.FullError());
    rpc.Finished(g);
    reactor->Finish(std::move(g));
  }
  return reactor;
}

grpc::ServerUnaryReactor* BrtService::CreateSession(grpc::CallbackServerContext* ctx,
                                                    const v1::CreateSessionRequest* request,
                                                    v1::Session* response) {
  // Blocking: with leases, creating takes one in the store.
  return Offload(ctx, "CreateSession", "", [this, ctx, request, response](const Tenant& tenant) {
    auto info = engine_->CreateSession(request->label(), FromProto(request->default_sampling()), tenant,
                                       SessionAffinityHeader(*ctx));
    if (info.ok()) ToProto(*info, response);
    return info.status();
  });
}

grpc::ServerUnaryReactor* BrtService::GetSession(grpc::CallbackServerContext* ctx,
                                                 const v1::GetSessionRequest* request,
                                                 v1::Session* response) {
  // Blocking only when the session must first be restored from the store.
  if (!engine_->NeedsStoreRead(request->session_id())) {
    RpcRecord rpc(metrics_, "GetSession");
    auto tenant = AdmitCall(*ctx, auth_, rpc, request->session_id());
    if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
    auto info = engine_->GetSession(request->session_id(), *tenant);
    if (info.ok()) ToProto(*info, response);
    return Reply(ctx, info.status(), rpc);
  }
  return Offload(ctx, "GetSession", request->session_id(), [this, request, response](const Tenant& tenant) {
    auto info = engine_->GetSession(request->session_id(), tenant);
    if (info.ok()) ToProto(*info, response);
    return info.status();
  });
}

grpc::ServerUnaryReactor* BrtService::ListSessions(grpc::CallbackServerContext* ctx,
                                                   const v1::ListSessionsRequest* request,
                                                   v1::ListSessionsResponse* response) {
  RpcRecord rpc(metrics_, "ListSessions");
  auto tenant = AdmitCall(*ctx, auth_, rpc, "");
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  for (const SessionInfo& s : engine_->ListSessions(*tenant)) ToProto(s, response->add_sessions());
  return Reply(ctx, absl::OkStatus(), rpc);
}

grpc::ServerUnaryReactor* BrtService::DeleteSession(grpc::CallbackServerContext* ctx,
                                                    const v1::DeleteSessionRequest* request,
                                                    v1::DeleteSessionResponse* response) {
  return Offload(ctx, "DeleteSession", request->session_id(), [this, request](const Tenant& tenant) {
    return engine_->DeleteSession(request->session_id(), tenant);
  });
}

grpc::ServerUnaryReactor* BrtService::SaveSession(grpc::CallbackServerContext* ctx,
                                                  const v1::SaveSessionRequest* request,
                                                  v1::SaveSessionResponse* response) {
  const bool to_store = !request->has_to_store() || request->to_store();
  if (!to_store && !request->return_bytes()) {
    RpcRecord rpc(metrics_, "SaveSession");
    return Reply(ctx,
                 absl::InvalidArgumentError(
                     "SaveSession with to_store=false and return_bytes=false saves nothing"),
                 rpc);
  }
  return Offload(ctx, "SaveSession", request->session_id(),
                 [this, request, response, to_store](const Tenant& tenant) {
                   auto saved = engine_->SaveSession(request->session_id(), to_store,
                                                     request->return_bytes(), tenant, request->unload());
                   if (saved.ok()) {
                     response->set_snapshot_key(saved->key);
                     response->set_snapshot(std::move(saved->bytes));
                     response->set_size_bytes(saved->size_bytes);
                   }
                   return saved.status();
                 });
}

grpc::ServerUnaryReactor* BrtService::RestoreSession(grpc::CallbackServerContext* ctx,
                                                     const v1::RestoreSessionRequest* request,
                                                     v1::Session* response) {
  return Offload(ctx, "RestoreSession", "", [this, request, response](const Tenant& tenant) {
    absl::StatusOr<SessionInfo> info;
    switch (request->source_case()) {
      case v1::RestoreSessionRequest::kSnapshotKey:
        info = engine_->RestoreSessionFromStore(request->snapshot_key(), request->new_id(), tenant);
        break;
      case v1::RestoreSessionRequest::kSnapshot:
        info = engine_->RestoreSession(request->snapshot(), request->new_id(), tenant);
        break;
      default:
        info = absl::InvalidArgumentError("RestoreSession needs snapshot_key or snapshot");
    }
    if (info.ok()) ToProto(*info, response);
    return info.status();
  });
}

grpc::ServerUnaryReactor* BrtService::ForkSession(grpc::CallbackServerContext* ctx,
                                                  const v1::ForkSessionRequest* request,
                                                  v1::Session* response) {
  return Offload(ctx, "ForkSession", request->session_id(), [this, request, response](const Tenant& tenant) {
    auto info = request->has_position()
                    ? engine_->ForkSessionAt(request->session_id(), request->position(), tenant)
                    : engine_->ForkSession(request->session_id(), tenant);
    if (info.ok()) ToProto(*info, response);
    return info.status();
  });
}

grpc::ServerUnaryReactor* BrtService::RewindSession(grpc::CallbackServerContext* ctx,
                                                    const v1::RewindSessionRequest* request,
                                                    v1::Session* response) {
  return Offload(ctx, "RewindSession", request->session_id(), [this, request, response](const Tenant& tenant) {
    auto info = engine_->RewindSession(request->session_id(), request->position(), tenant);
    if (info.ok()) ToProto(*info, response);
    return info.status();
  });
}

grpc::ServerUnaryReactor* BrtService::DeleteSnapshot(grpc::CallbackServerContext* ctx,
                                                     const v1::DeleteSnapshotRequest* request,
                                                     v1::DeleteSnapshotResponse* response) {
  return Offload(ctx, "DeleteSnapshot", "", [this, request](const Tenant& tenant) {
    return engine_->DeleteSnapshot(request->snapshot_key(), tenant);
  });
}

grpc::ServerUnaryReactor* BrtService::ListSnapshots(grpc::CallbackServerContext* ctx,
                                                    const v1::ListSnapshotsRequest* request,
                                                    v1::ListSnapshotsResponse* response) {
  return Offload(ctx, "ListSnapshots", "", [this, response](const Tenant& tenant) {
    auto keys = engine_->ListSnapshots(tenant);
    if (keys.ok()) {
      for (const std::string& k : *keys) response->add_snapshot_keys(k);
    }
    return keys.status();
  });
}

grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* BrtService::Score(
    grpc::CallbackServerContext* ctx) {
  return NewScoreReactor(engine_, ctx, metrics_, options_, &peers_, auth_, &blocking_);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* BrtService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) {
  return NewGenerateReactor(engine_, ctx, *request, metrics_, &peers_, auth_, &blocking_);
}

grpc::ServerUnaryReactor* BrtService::GetServerInfo(grpc::CallbackServerContext* ctx,
                                                    const v1::GetServerInfoRequest* request,
                                                    v1::ServerInfo* response) {
  RpcRecord rpc(metrics_, "GetServerInfo");
  auto tenant = AdmitCall(*ctx, auth_, rpc, "");
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  const ModelMetadata& m = engine_->metadata();
  v1::ModelInfo* model = response->mutable_model();
  model->set_name(m.name);
  model->set_fingerprint(m.fingerprint);
  model->set_window(m.window);
  model->set_n_state(m.n_state);
  model->set_n_layers(m.n_layers);
  model->set_n_recurrent(m.n_recurrent);
  model->set_vocab_size(m.vocab_size);
  model->set_d_model(m.d_model);
  model->set_n_heads(m.n_heads);
  model->set_parameters(m.parameters);
  model->set_device(m.device);
  model->set_dtype(m.dtype);
  model->set_tokenizer_sha256(engine_->tokenizer().sha256());
  model->set_bos_id(m.bos_id);
  model->set_eos_id(m.eos_id);
  model->set_state_bytes_per_session(m.state_bytes);

  const EngineOptions& o = engine_->options();
  v1::ServerLimits* limits = response->mutable_limits();
  limits->set_max_sessions(o.max_sessions);
  limits->set_max_queue(o.max_queue);
  limits->set_max_batch_size(o.max_batch_size);
  limits->set_max_chunk_bytes(o.max_chunk_bytes);
  limits->set_max_tokens_cap(o.max_tokens_cap);
  limits->set_max_top_k(o.max_top_k);

  StatsSnapshot st = engine_->stats();
  v1::ExecutorStats* ex = response->mutable_executor();
  ex->set_score_calls(st.score.calls);
  ex->set_decode_calls(st.decode.calls);
  ex->set_max_score_batch(st.score.max_batch);
  ex->set_max_decode_batch(st.decode.max_batch);
  for (size_t i = 0; i < kBatchBuckets.size(); ++i) {
    v1::BatchSizeBucket* b = ex->add_score_batch_histogram();
    b->set_le(kBatchBuckets[i]);
    b->set_count(st.score.histogram[i]);
    b = ex->add_decode_batch_histogram();
    b->set_le(kBatchBuckets[i]);
    b->set_count(st.decode.histogram[i]);
    b = ex->add_span_batch_histogram();
    b->set_le(kBatchBuckets[i]);
    b->set_count(st.span.histogram[i]);
  }
  ex->set_span_calls(st.span.calls);
  ex->set_max_span_batch(st.span.max_batch);
  ex->set_span_tokens(st.span.tokens);
  ex->set_scored_block_tokens(st.score.tokens);
  ex->set_decoded_tokens(st.decode.tokens);
  ex->set_active_calls(engine_->active_calls());
  ex->set_sessions(engine_->session_count());
  response->set_version(version_);
  return Reply(ctx, absl::OkStatus(), rpc);
}

}  // namespace brt
