#include "server/grpc/brt_service.h"

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/grpc/call_auth.h"
#include "server/grpc/convert.h"
#include "server/grpc/status_util.h"
#include "server/metrics/metrics.h"

namespace brt {
namespace {

[[maybe_unused]] grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx,
                                                 const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Times one RPC from its handler's entry and records it when it finishes (nothing without metrics).
// Recorded just before Finish, so a client that has its status sees the call counted.
class RpcRecord {
 public:
  RpcRecord(metrics::Metrics* metrics, std::string_view method)
      : metrics_(metrics),
        method_(method),
        start_(metrics != nullptr ? std::chrono::steady_clock::now()
                                  : std::chrono::steady_clock::time_point()) {}

  void Finished(const grpc::Status& status) const {
    if (metrics_ == nullptr) return;
    metrics_->RecordRequest(
        method_, static_cast<int>(status.error_code()),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    metrics_->RecordTenantRequest(tenant_, static_cast<int>(status.error_code()));
  }
  // The tenant the call was authenticated as (brt_tenant_requests_total).
  void set_tenant(std::string tenant) { tenant_ = std::move(tenant); }

 private:
  metrics::Metrics* metrics_;
  std::string tenant_;
  std::string_view method_;  // a string literal
  std::chrono::steady_clock::time_point start_;
};

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, const absl::Status& status,
                                const RpcRecord& rpc) {
  grpc::Status g = ToGrpcStatus(status);
  rpc.Finished(g);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(g));
  return reactor;
}

// Authenticates a call and checks its x-brt-session metadata against `session_id` (empty: not
// session-scoped): the tenant it acts for (recorded in `rpc`), or the error to finish with.
absl::StatusOr<Tenant> AdmitCall(const grpc::CallbackServerContext& ctx,
                                 const auth::Authenticator* auth, RpcRecord& rpc,
                                 std::string_view session_id) {
  absl::StatusOr<Tenant> tenant = TenantOfCall(ctx, auth);
  if (!tenant.ok()) return tenant;
  rpc.set_tenant(tenant->name);
  absl::Status routed = CheckSessionAffinity(ctx, session_id);
  if (!routed.ok()) return routed;
  return tenant;
}

// Bytes that a TokenScore adds to a ScoreResponse: its tag (field 1), its length varint, itself.
size_t TokenEntryBytes(const v1::TokenScore& t) {
  size_t n = t.ByteSizeLong();
  size_t varint = 1;
  for (size_t v = n; v >= 0x80; v >>= 7) ++varint;
  return 1 + varint + n;
}

// One Score stream. Reads are paced by the core (Append's return value and OnInputReady) and by the
// replies not yet written (BrtServiceOptions::max_pending_reply_bytes): while more than that is
// queued, no further input is read. Writes are queued; token batches that arrive while a write is in
// flight are merged into the last queued message while it stays within max_reply_bytes, else a new
// message is queued. Finish is called only once the core has called OnFinish (or before any core
// call exists), so the core never calls a deleted sink.
class ScoreReactor final : public grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>,
                           public ScoreSink {
 public:
  ScoreReactor(Engine* engine, grpc::CallbackServerContext* ctx, metrics::Metrics* metrics,
               const BrtServiceOptions& options, PeerLimiter* peers,
               const auth::Authenticator* auth)
      : engine_(engine), ctx_(ctx), rpc_(metrics, "Score"), options_(options) {
    auto tenant = AdmitCall(*ctx, auth, rpc_, "");
    if (!tenant.ok()) {
      absl::MutexLock lock(&mu_);
      FinishLocked(tenant.status());
      return;
    }
    tenant_ = *std::move(tenant);
    auto slot = peers->Acquire(ctx->peer());
    if (!slot.ok()) {
      absl::MutexLock lock(&mu_);
      FinishLocked(slot.status());
      return;
    }
    peer_slot_ = *std::move(slot);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or the call is ending)
      absl::MutexLock lock(&mu_);
      if (call_ == nullptr) {
        FinishLocked(absl::InvalidArgumentError(
            "the Score stream ended without a first ScoreRequest naming session_id"));
      } else {
        absl::Status s = call_->CloseInput();
        if (!s.ok()) FailLocked(s);
      }
      return;
    }
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    if (call_ == nullptr) {
      if (request_.session_id().empty()) {
        FinishLocked(
            absl::InvalidArgumentError("session_id is required in the first ScoreRequest"));
        return;
      }
      absl::Status routed = CheckSessionAffinity(*ctx_, request_.session_id());
      if (!routed.ok()) {
        FinishLocked(routed);
        return;
      }
      ScoreOptions options;
      options.top_k = static_cast<int32_t>(std::min<uint32_t>(request_.top_k(), 1u << 30));
      options.omit_tokens = request_.omit_tokens();
      options.deadline = FromDeadline(ctx_->deadline());
      auto call = engine_->StartScore(request_.session_id(), options, this, tenant_);
      if (!call.ok()) {
        FinishLocked(call.status());
        return;
      }
      call_ = *std::move(call);
      session_id_ = request_.session_id();
    } else if (!request_.session_id().empty() && request_.session_id() != session_id_) {
      FailLocked(absl::InvalidArgumentError(
          absl::StrCat("session_id of a later ScoreRequest must be empty or ", session_id_,
                       ", got ", QuoteClientInput(request_.session_id()))));
      return;
    }
    if (request_.ack_position() > 0) call_->Ack(request_.ack_position());
    if (request_.token_ids_size() > 0) {
      std::vector<int32_t> ids;
      ids.reserve(request_.token_ids_size());
      for (uint32_t id : request_.token_ids()) {
        ids.push_back(static_cast<int32_t>(std::min<uint32_t>(id, INT32_MAX)));
      }
      auto accepted = call_->AppendTokens(ids);
      if (!accepted.ok()) {
        FailLocked(accepted.status());
        return;
      }
      if (request_.text().empty()) {
        if (*accepted) ReadNextLocked();
        return;
      }
    }
    auto more = call_->Append(request_.text());
    if (!more.ok()) {
      FailLocked(more.status());
      return;
    }
    if (*more) ReadNextLocked();
    // Otherwise the core calls OnInputReady when its backlog drains.
  }

  void OnInputReady() override {
    absl::MutexLock lock(&mu_);
    ReadNextLocked();
  }

  void OnTokens(std::vector<TokenScoreResult> tokens) override {
    absl::MutexLock lock(&mu_);
    for (const TokenScoreResult& t : tokens) {
      v1::TokenScore proto;
      ToProto(t, &proto);
      const size_t bytes = TokenEntryBytes(proto);
      // Merge into the last queued message when it is not the one being written and stays within
      // max_reply_bytes; a message always takes at least one token.
      const bool mergeable = queue_.size() >= 2 || (!queue_.empty() && !writing_);
      if (!mergeable ||
          (queue_.back().bytes > 0 && queue_.back().bytes + bytes > options_.max_reply_bytes)) {
        queue_.emplace_back();
      }
      Reply& r = queue_.back();
      *r.message.add_tokens() = std::move(proto);
      r.bytes += bytes;
      queued_bytes_ += bytes;
    }
    WriteNextLocked();
  }

  void OnFinish(absl::StatusOr<ScoreSummaryResult> summary) override {
    absl::MutexLock lock(&mu_);
    core_done_ = true;
    if (!error_.ok()) {
      FinishLocked(error_);
      return;
    }
    if (!summary.ok()) {
      FinishLocked(summary.status());
      return;
    }
    Reply& r = queue_.emplace_back();
    ToProto(*summary, r.message.mutable_summary());
    r.bytes = r.message.ByteSizeLong();
    queued_bytes_ += r.bytes;
    pending_finish_ = absl::OkStatus();
    WriteNextLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!queue_.empty()) {
      queued_bytes_ -= queue_.front().bytes;
      queue_.pop_front();
    }
    if (!ok) {  // the client is gone: drop output, stop the work
      queue_.clear();
      queued_bytes_ = 0;
      if (call_ != nullptr && !core_done_) call_->Cancel();
      if (pending_finish_) FinishLocked(*pending_finish_);
      return;
    }
    if (read_waits_for_writes_ && queued_bytes_ <= options_.max_pending_reply_bytes) {
      read_waits_for_writes_ = false;
      ReadNextLocked();
    }
    WriteNextLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    if (call_ != nullptr && !core_done_) call_->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  struct Reply {
    v1::ScoreResponse message;
    size_t bytes = 0;  // its serialized size
  };

  // Reads the next request, unless the replies queued for this client are over the bound: then
  // OnWriteDone reads once they have drained (the core has asked for input, or Append allowed it).
  void ReadNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finishing_) return;
    if (queued_bytes_ > options_.max_pending_reply_bytes) {
      read_waits_for_writes_ = true;
      return;
    }
    StartRead(&request_);
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finishing_) return;
    if (!queue_.empty()) {
      writing_ = true;
      StartWrite(&queue_.front().message);
    } else if (pending_finish_) {
      FinishLocked(*pending_finish_);
    }
  }

  // Ends the call with an error: the core stops the work and calls OnFinish, which finishes with
  // error_.
  void FailLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (error_.ok()) error_ = status;
    if (call_ != nullptr && !core_done_) {
      call_->Cancel();
    } else {
      FinishLocked(status);
    }
  }

  void FinishLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finishing_) return;
    finishing_ = true;
    grpc::Status g = ToGrpcStatus(status);
    rpc_.Finished(g);
    Finish(std::move(g));
  }

  Engine* const engine_;
  grpc::CallbackServerContext* const ctx_;
  RpcRecord rpc_;  // its tenant is set once, in the constructor
  const BrtServiceOptions options_;
  Tenant tenant_;  // set in the constructor
  std::unique_ptr<PeerLimiter::Slot> peer_slot_;  // this call's count against its client's limit
  v1::ScoreRequest request_;  // only touched by the read path
  absl::Mutex mu_;
  std::unique_ptr<ScoreCall> call_ ABSL_GUARDED_BY(mu_);
  std::string session_id_ ABSL_GUARDED_BY(mu_);
  std::deque<Reply> queue_ ABSL_GUARDED_BY(mu_);  // front is being written if writing_
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // sum of queue_[i].bytes
  // The read side waits for queued_bytes_ to drop to max_pending_reply_bytes.
  bool read_waits_for_writes_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool core_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
};

// One Generate stream: a message per generated token, then the final message.
class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                              public GenerateSink {
 public:
  GenerateReactor(Engine* engine, grpc::CallbackServerContext* ctx,
                  const v1::GenerateRequest& request, metrics::Metrics* metrics, PeerLimiter* peers,
                  const auth::Authenticator* auth)
      : rpc_(metrics, "Generate") {
    absl::MutexLock lock(&mu_);
    auto tenant = AdmitCall(*ctx, auth, rpc_, request.session_id());
    if (!tenant.ok()) {
      FinishLocked(tenant.status());
      return;
    }
    auto slot = peers->Acquire(ctx->peer());
    if (!slot.ok()) {
      FinishLocked(slot.status());
      return;
    }
    peer_slot_ = *std::move(slot);
    GenerateParams params;
    params.prompt = request.prompt();
    if (request.has_max_tokens()) params.max_tokens = request.max_tokens();
    params.sampling = FromProto(request.sampling());
    params.deadline = FromDeadline(ctx->deadline());
    auto call = engine->StartGenerate(request.session_id(), std::move(params), this, *tenant);
    if (!call.ok()) {
      FinishLocked(call.status());
      return;
    }
    call_ = *std::move(call);
  }

  void OnToken(GeneratedToken token) override {
    absl::MutexLock lock(&mu_);
    v1::GenerateResponse& r = queue_.emplace_back();
    r.set_text(std::move(token.text));
    r.set_token_id(static_cast<uint32_t>(token.token_id));
    r.set_logprob(token.logprob);
    r.set_position(token.position);
    r.set_token_bytes(std::move(token.bytes));
    WriteNextLocked();
  }

  void OnFinish(absl::StatusOr<GenerateSummary> summary) override {
    absl::MutexLock lock(&mu_);
    core_done_ = true;
    if (!summary.ok()) {
      FinishLocked(summary.status());
      return;
    }
    v1::GenerateResponse& r = queue_.emplace_back();
    r.set_text(summary->text);
    r.set_finish_reason(ToProto(summary->reason));
    r.set_prompt_tokens(summary->prompt_tokens);
    r.set_generated_tokens(summary->generated_tokens);
    r.set_session_position(summary->session_position);
    pending_finish_ = absl::OkStatus();
    WriteNextLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!queue_.empty()) queue_.pop_front();
    if (!ok) {
      queue_.clear();
      if (call_ != nullptr && !core_done_) call_->Cancel();
      if (pending_finish_) FinishLocked(*pending_finish_);
      return;
    }
    WriteNextLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    if (call_ != nullptr && !core_done_) call_->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finishing_) return;
    if (!queue_.empty()) {
      writing_ = true;
      StartWrite(&queue_.front());
    } else if (pending_finish_) {
      FinishLocked(*pending_finish_);
    }
  }

  void FinishLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finishing_) return;
    finishing_ = true;
    grpc::Status g = ToGrpcStatus(status);
    rpc_.Finished(g);
    Finish(std::move(g));
  }

  RpcRecord rpc_;  // its tenant is set once, in the constructor
  std::unique_ptr<PeerLimiter::Slot> peer_slot_;  // this call's count against its client's limit
  absl::Mutex mu_;
  std::unique_ptr<GenerateCall> call_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool core_done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerUnaryReactor* BrtService::CreateSession(grpc::CallbackServerContext* ctx,
                                                    const v1::CreateSessionRequest* request,
                                                    v1::Session* response) {
  RpcRecord rpc(metrics_, "CreateSession");
  auto tenant = AdmitCall(*ctx, auth_, rpc, "");
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  auto info = engine_->CreateSession(request->label(), FromProto(request->default_sampling()), *tenant,
                                     SessionAffinityHeader(*ctx));
  if (info.ok()) ToProto(*info, response);
  return Reply(ctx, info.status(), rpc);
}

grpc::ServerUnaryReactor* BrtService::GetSession(grpc::CallbackServerContext* ctx,
                                                 const v1::GetSessionRequest* request,
                                                 v1::Session* response) {
  RpcRecord rpc(metrics_, "GetSession");
  auto tenant = AdmitCall(*ctx, auth_, rpc, request->session_id());
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  auto info = engine_->GetSession(request->session_id(), *tenant);
  if (info.ok()) ToProto(*info, response);
  return Reply(ctx, info.status(), rpc);
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
  RpcRecord rpc(metrics_, "DeleteSession");
  auto tenant = AdmitCall(*ctx, auth_, rpc, request->session_id());
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  return Reply(ctx, engine_->DeleteSession(request->session_id(), *tenant), rpc);
}

grpc::ServerUnaryReactor* BrtService::SaveSession(grpc::CallbackServerContext* ctx,
                                                  const v1::SaveSessionRequest* request,
                                                  v1::SaveSessionResponse* response) {
  RpcRecord rpc(metrics_, "SaveSession");
  auto tenant = AdmitCall(*ctx, auth_, rpc, request->session_id());
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  const bool to_store = !request->has_to_store() || request->to_store();
  if (!to_store && !request->return_bytes()) {
    return Reply(ctx,
                 absl::InvalidArgumentError(
                     "SaveSession with to_store=false and return_bytes=false saves nothing"),
                 rpc);
  }
  auto saved = engine_->SaveSession(request->session_id(), to_store, request->return_bytes(), *tenant,
                                    request->unload());
  if (saved.ok()) {
    response->set_snapshot_key(saved->key);
    response->set_snapshot(std::move(saved->bytes));
    response->set_size_bytes(saved->size_bytes);
  }
  return Reply(ctx, saved.status(), rpc);
}

grpc::ServerUnaryReactor* BrtService::RestoreSession(grpc::CallbackServerContext* ctx,
                                                     const v1::RestoreSessionRequest* request,
                                                     v1::Session* response) {
  RpcRecord rpc(metrics_, "RestoreSession");
  auto tenant = AdmitCall(*ctx, auth_, rpc, "");
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  absl::StatusOr<SessionInfo> info;
  switch (request->source_case()) {
    case v1::RestoreSessionRequest::kSnapshotKey:
      info = engine_->RestoreSessionFromStore(request->snapshot_key(), request->new_id(), *tenant);
      break;
    case v1::RestoreSessionRequest::kSnapshot:
      info = engine_->RestoreSession(request->snapshot(), request->new_id(), *tenant);
      break;
    default:
      info = absl::InvalidArgumentError("RestoreSession needs snapshot_key or snapshot");
  }
  if (info.ok()) ToProto(*info, response);
  return Reply(ctx, info.status(), rpc);
}

grpc::ServerUnaryReactor* BrtService::ForkSession(grpc::CallbackServerContext* ctx,
                                                  const v1::ForkSessionRequest* request,
                                                  v1::Session* response) {
  RpcRecord rpc(metrics_, "ForkSession");
  auto tenant = AdmitCall(*ctx, auth_, rpc, request->session_id());
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  auto info = request->has_position()
                  ? engine_->ForkSessionAt(request->session_id(), request->position(), *tenant)
                  : engine_->ForkSession(request->session_id(), *tenant);
  if (info.ok()) ToProto(*info, response);
  return Reply(ctx, info.status(), rpc);
}

grpc::ServerUnaryReactor* BrtService::RewindSession(grpc::CallbackServerContext* ctx,
                                                    const v1::RewindSessionRequest* request,
                                                    v1::Session* response) {
  RpcRecord rpc(metrics_, "RewindSession");
  auto tenant = AdmitCall(*ctx, auth_, rpc, request->session_id());
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  auto info = engine_->RewindSession(request->session_id(), request->position(), *tenant);
  if (info.ok()) ToProto(*info, response);
  return Reply(ctx, info.status(), rpc);
}

grpc::ServerUnaryReactor* BrtService::DeleteSnapshot(grpc::CallbackServerContext* ctx,
                                                     const v1::DeleteSnapshotRequest* request,
                                                     v1::DeleteSnapshotResponse* response) {
  RpcRecord rpc(metrics_, "DeleteSnapshot");
  auto tenant = AdmitCall(*ctx, auth_, rpc, "");
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  return Reply(ctx, engine_->DeleteSnapshot(request->snapshot_key(), *tenant), rpc);
}

grpc::ServerUnaryReactor* BrtService::ListSnapshots(grpc::CallbackServerContext* ctx,
                                                    const v1::ListSnapshotsRequest* request,
                                                    v1::ListSnapshotsResponse* response) {
  RpcRecord rpc(metrics_, "ListSnapshots");
  auto tenant = AdmitCall(*ctx, auth_, rpc, "");
  if (!tenant.ok()) return Reply(ctx, tenant.status(), rpc);
  auto keys = engine_->ListSnapshots(*tenant);
  if (keys.ok()) {
    for (const std::string& k : *keys) response->add_snapshot_keys(k);
  }
  return Reply(ctx, keys.status(), rpc);
}

grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* BrtService::Score(
    grpc::CallbackServerContext* ctx) {
  return new ScoreReactor(engine_, ctx, metrics_, options_, &peers_, auth_);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* BrtService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) {
  return new GenerateReactor(engine_, ctx, *request, metrics_, &peers_, auth_);
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
  }
  ex->set_scored_block_tokens(st.score.tokens);
  ex->set_decoded_tokens(st.decode.tokens);
  ex->set_active_calls(engine_->active_calls());
  ex->set_sessions(engine_->session_count());
  response->set_version(version_);
  return Reply(ctx, absl::OkStatus(), rpc);
}

}  // namespace brt
