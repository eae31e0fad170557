// The streaming handlers of brt.v1.Brt: one reactor per Score and per Generate call (see
// streaming_reactors.h).
#include "server/grpc/streaming_reactors.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/core/client_text.h"
#include "server/grpc/call_record.h"
#include "server/grpc/convert.h"
#include "server/grpc/status_util.h"
#include "server/persistence/snapshot_store.h"

namespace brt {
namespace {

// Bytes that a TokenScore adds to a ScoreResponse: its tag (field 1), its length varint, itself.
size_t TokenEntryBytes(const v1::TokenScore& t) {
  size_t n = t.ByteSizeLong();
  size_t varint = 1;
  for (size_t v = n; v >= 0x80; v >>= 7) ++varint;
  return 1 + varint + n;
}

// Holds a reactor's mu_ for a scope. A Finish that the scope asked for (the reactor's FinishLocked) is
// called once mu_ is released, as the scope's last use of the reactor: as soon as Finish is called, gRPC
// may run OnDone, which deletes the reactor, on another thread. Only gRPC's own reactions (OnWriteDone,
// OnReadDone, ...) hold OnDone back until they return; a core callback (on the executor or the event
// deliverer) or a blocking-pool task does not, and unlocking a deleted reactor's mutex corrupts the heap.
template <typename Reactor>
class ABSL_SCOPED_LOCKABLE ReactorLock {
 public:
  explicit ReactorLock(Reactor* r) ABSL_EXCLUSIVE_LOCK_FUNCTION(r->mu_) : r_(r) { r->mu_.Lock(); }
  ~ReactorLock() ABSL_UNLOCK_FUNCTION() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Reactor* const r = r_;
    std::optional<grpc::Status> finish;
    finish.swap(r->finish_);
    r->mu_.Unlock();
    if (finish) r->Finish(*std::move(finish));  // nothing after this touches the reactor
  }
  ReactorLock(const ReactorLock&) = delete;
  ReactorLock& operator=(const ReactorLock&) = delete;

 private:
  Reactor* const r_;
};

// One Score stream. Reads are paced by the core (Append's return value and OnInputReady) and by the
// replies not yet written (BrtServiceOptions::max_pending_reply_bytes): while more than that is
// queued, no further input is read. Writes are queued; token batches that arrive while a write is in
// flight are merged into the last queued message while it stays within max_reply_bytes, else a new
// message is queued. Finish is called only once the core has called OnFinish (or before any core
// call exists), so the core never calls a deleted sink.
class ScoreReactor final : public grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>,
                           public ScoreSink {
 public:
  using Lock = ReactorLock<ScoreReactor>;

  ScoreReactor(Engine* engine, grpc::CallbackServerContext* ctx, metrics::Metrics* metrics,
               const BrtServiceOptions& options, PeerLimiter* peers,
               const auth::Authenticator* auth, BlockingPool* blocking)
      : engine_(engine), ctx_(ctx), rpc_(metrics, "Score"), options_(options), blocking_(blocking) {
    auto tenant = AdmitCall(*ctx, auth, rpc_, "");
    if (!tenant.ok()) {
      Lock lock(this);
      FinishLocked(tenant.status());
      return;
    }
    tenant_ = *std::move(tenant);
    auto slot = peers->Acquire(ctx->peer());
    if (!slot.ok()) {
      Lock lock(this);
      FinishLocked(slot.status());
      return;
    }
    peer_slot_ = *std::move(slot);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or the call is ending)
      Lock lock(this);
      if (call_ == nullptr) {
        FinishLocked(absl::InvalidArgumentError(
            "the Score stream ended without a first ScoreRequest naming session_id"));
      } else {
        absl::Status s = call_->CloseInput();
        if (!s.ok()) FailLocked(s);
      }
      return;
    }
    Lock lock(this);
    HandleRequestLocked();
  }

  // The request just read (request_). The first one starts the core call: on the blocking pool when its
  // session must first be read from the snapshot store, then the rest of this runs there.
  void HandleRequestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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
      if (!store_checked_ && engine_->NeedsStoreRead(request_.session_id())) {
        store_checked_ = true;
        // Nothing finishes the call while this waits: no read is pending and there is no core call
        // for OnCancel to stop, so the reactor outlives the task.
        const bool queued = blocking_->TrySubmit([this, deadline = ctx_->deadline()] {
          absl::Status loaded;
          {
            persistence::ScopedStoreDeadline store_deadline(SteadyDeadline(deadline));
            loaded = engine_->LoadFromStore(request_.session_id(), tenant_);
          }
          Lock lock(this);
          if (!loaded.ok()) {
            FinishLocked(loaded);
            return;
          }
          HandleRequestLocked();
        });
        if (!queued) FinishLocked(blocking_->FullError());
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
    Lock lock(this);
    ReadNextLocked();
  }

  void OnTokens(std::vector<TokenScoreResult> tokens) override {
    Lock lock(this);
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
    Lock lock(this);
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
    Lock lock(this);
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
    Lock lock(this);
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
    finish_ = std::move(g);  // called by Lock's destructor, after mu_ is released
  }

  Engine* const engine_;
  grpc::CallbackServerContext* const ctx_;
  RpcRecord rpc_;  // its tenant is set once, in the constructor
  const BrtServiceOptions options_;
  BlockingPool* const blocking_;
  Tenant tenant_;  // set in the constructor
  std::unique_ptr<PeerLimiter::Slot> peer_slot_;  // this call's count against its client's limit
  v1::ScoreRequest request_;  // only touched by the read path
  absl::Mutex mu_;
  std::unique_ptr<ScoreCall> call_ ABSL_GUARDED_BY(mu_);
  bool store_checked_ ABSL_GUARDED_BY(mu_) = false;  // the session was looked for in the store
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
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);  // for Lock to call Finish with
  friend class ReactorLock<ScoreReactor>;
};

// One Generate stream: a message per generated token, then the final message.
class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                              public GenerateSink {
 public:
  using Lock = ReactorLock<GenerateReactor>;

  GenerateReactor(Engine* engine, grpc::CallbackServerContext* ctx,
                  const v1::GenerateRequest& request, metrics::Metrics* metrics, PeerLimiter* peers,
                  const auth::Authenticator* auth, BlockingPool* blocking)
      : rpc_(metrics, "Generate") {
    Lock lock(this);
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
    stream_interval_ = std::max<uint32_t>(1, request.stream_interval());
    GenerateParams params;
    params.prompt = request.prompt();
    if (request.has_max_tokens()) params.max_tokens = request.max_tokens();
    params.sampling = FromProto(request.sampling());
    params.deadline = FromDeadline(ctx->deadline());
    if (!engine->NeedsStoreRead(request.session_id())) {
      StartLocked(engine, request.session_id(), std::move(params), *tenant);
      return;
    }
    // The session must first be read from the store: on the blocking pool. Nothing finishes the call
    // meanwhile (no core call for OnCancel to stop), so the reactor outlives the task.
    const bool queued = blocking->TrySubmit(
        [this, engine, id = request.session_id(), params, tenant = *tenant, deadline = ctx->deadline()] {
          absl::Status loaded;
          {
            persistence::ScopedStoreDeadline store_deadline(SteadyDeadline(deadline));
            loaded = engine->LoadFromStore(id, tenant);
          }
          Lock lock(this);
          if (!loaded.ok()) {
            FinishLocked(loaded);
            return;
          }
          StartLocked(engine, id, params, tenant);
        });
    if (!queued) FinishLocked(blocking->FullError());
  }

  void OnToken(GeneratedToken token) override {
    Lock lock(this);
    if (stream_interval_ == 1) {
      v1::GenerateResponse& r = queue_.emplace_back();
      r.set_text(std::move(token.text));
      r.set_token_id(static_cast<uint32_t>(token.token_id));
      r.set_logprob(token.logprob);
      r.set_position(token.position);
      r.set_token_bytes(std::move(token.bytes));
      WriteNextLocked();
      return;
    }
    // Several tokens per message: the first token at once, then every stream_interval_ tokens.
    pending_.mutable_text()->append(token.text);
    v1::StreamedToken* t = pending_.add_tokens();
    t->set_token_id(static_cast<uint32_t>(token.token_id));
    t->set_logprob(token.logprob);
    t->set_position(token.position);
    t->set_token_bytes(std::move(token.bytes));
    if (!first_sent_ || static_cast<uint32_t>(pending_.tokens_size()) >= stream_interval_) {
      first_sent_ = true;
      queue_.push_back(std::move(pending_));
      pending_.Clear();
      WriteNextLocked();
    }
  }

  void OnFinish(absl::StatusOr<GenerateSummary> summary) override {
    Lock lock(this);
    core_done_ = true;
    if (!summary.ok()) {
      FinishLocked(summary.status());
      return;
    }
    // The last message: the tokens not yet sent (stream_interval > 1), the text held back until now.
    v1::GenerateResponse& r = queue_.emplace_back(std::move(pending_));
    pending_.Clear();
    r.mutable_text()->append(summary->text);
    r.set_finish_reason(ToProto(summary->reason));
    r.set_prompt_tokens(summary->prompt_tokens);
    r.set_generated_tokens(summary->generated_tokens);
    r.set_session_position(summary->session_position);
    pending_finish_ = absl::OkStatus();
    WriteNextLocked();
  }

  void OnWriteDone(bool ok) override {
    Lock lock(this);
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
    Lock lock(this);
    if (call_ != nullptr && !core_done_) call_->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  void StartLocked(Engine* engine, const std::string& session_id, GenerateParams params,
                   const Tenant& tenant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto call = engine->StartGenerate(session_id, std::move(params), this, tenant);
    if (!call.ok()) {
      FinishLocked(call.status());
      return;
    }
    call_ = *std::move(call);
  }

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
    finish_ = std::move(g);  // called by Lock's destructor, after mu_ is released
  }

  RpcRecord rpc_;  // its tenant is set once, in the constructor
  std::unique_ptr<PeerLimiter::Slot> peer_slot_;  // this call's count against its client's limit
  absl::Mutex mu_;
  std::unique_ptr<GenerateCall> call_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);
  // GenerateRequest.stream_interval (at least 1): tokens per message after the first.
  uint32_t stream_interval_ = 1;
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);  // tokens not yet queued (stream_interval_ > 1)
  bool first_sent_ ABSL_GUARDED_BY(mu_) = false;  // a token was queued (stream_interval_ > 1)
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool core_done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);  // for Lock to call Finish with
  friend class ReactorLock<GenerateReactor>;
};

}  // namespace

grpc::ServerBidiReactor<v1::ScoreRequest, v1::ScoreResponse>* NewScoreReactor(
    Engine* engine, grpc::CallbackServerContext* ctx, metrics::Metrics* metrics,
    const BrtServiceOptions& options, PeerLimiter* peers, const auth::Authenticator* auth,
    BlockingPool* blocking) {
  return new ScoreReactor(engine, ctx, metrics, options, peers, auth, blocking);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* NewGenerateReactor(
    Engine* engine, grpc::CallbackServerContext* ctx, const v1::GenerateRequest& request,
    metrics::Metrics* metrics, PeerLimiter* peers, const auth::Authenticator* auth,
    BlockingPool* blocking) {
  return new GenerateReactor(engine, ctx, request, metrics, peers, auth, blocking);
}

}  // namespace brt
