// Engine: the server core. It owns the session table, a bounded queue of active calls (Score and
// Generate) and ONE executor thread that owns the model backend. It knows nothing of gRPC.
//
// Where things live (a newcomer's map): engine.cc sessions and the caller side of calls;
// session_table.h ids, capacity and pool slots; batch_planner.h what one model call runs (pure);
// executor.cc the loop that owns the model; call_results.h turning model output into replies;
// engine_snapshots.cc save/restore/fork; housekeeper.cc idle TTL, memory budget and autosave.
//
// Execution model (the invariant the rest relies on): RPC threads never touch the model. They
// tokenize, enqueue tokens and wait for results through sinks; the executor thread alone calls the
// ModelBackend and alone changes a session's model memory, which stays resident in a slot of the
// backend's device pools. Each executor iteration runs
//   1. one batched decode step over every session that needs a single-token feed (generating sessions,
//      sessions mid-block, and the partial last block at the end of a Score call or prompt), then
//   2. one batched block-scoring call over up to max_batch_size sessions that sit at a block boundary
//      with at least W pending tokens (rows picked round-robin),
// so a book being scored delays another session's next token by at most one block-scoring call.
//
// Sessions change only at token or block boundaries: the executor advances a session's position only
// after a successful model call; a cancelled or deleted call leaves its session consistent and usable.
// A failed model call marks the sessions it was advancing as damaged (their memory was being written in
// place): later calls on them are refused with a message that says to restore from a snapshot.
//
// Thread safety: all public methods are thread-safe. Sink callbacks run on the executor thread (or
// the calling thread for immediate errors) without any Engine lock held; they must not block for
// long.
#ifndef BRT_SERVER_CORE_ENGINE_H_
#define BRT_SERVER_CORE_ENGINE_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/batch_planner.h"
#include "server/core/call_types.h"
#include "server/core/checkpoint_recycler.h"
#include "server/core/event_deliverer.h"
#include "server/core/sampling_params.h"
#include "server/core/session_table.h"
#include "server/core/tenant.h"
#include "server/core/stats.h"
#include "server/model/backend.h"
#include "server/persistence/snapshot.h"
#include "server/persistence/snapshot_store.h"
#include "server/tokenizer/tokenizer.h"

namespace brt {

namespace metrics {
class Metrics;
enum class EvictionReason;
}  // namespace metrics

struct EngineOptions {
  // Sessions held at once; CreateSession fails with RESOURCE_EXHAUSTED beyond it.
  uint32_t max_sessions = 1024;
  // Active Score/Generate calls (the scheduler queue); new calls fail with UNAVAILABLE beyond it.
  uint32_t max_queue = 256;
  // Rows (sessions) per batched score_blocks call.
  uint32_t max_batch_size = 8;
  // Rows per batched decode_step call.
  uint32_t max_decode_batch = 64;
  // Blocks per row in one score_blocks call when the batch is full. A call runs at most
  // max_batch_size * max_blocks_per_call blocks in all (fewer rows get more blocks each), which bounds the
  // latency one call adds to other sessions' generation.
  uint32_t max_blocks_per_call = 2;
  // Decode rows per step whose token completes a block (0 = no limit). Such a row also runs the state
  // update (several tokens' decode work); when more sessions than this reach the end of a block in the
  // same step, the rest wait a step or a few (once), which spreads the updates instead of stalling every
  // session for all of them (see BatchPlanner).
  uint32_t max_block_ends_per_step = 8;
  // And at most one such row per this many decode rows in the step (at least one; 0 = no share limit):
  // an update costs ~5 rows' decode, so 1/16 of the rows adds ~30% to a step, whatever the batch size.
  uint32_t decode_rows_per_block_end = 16;
  // Chunked prefill: span tokens (prompts, Score tails) fed in a step that also decodes for other
  // sessions, in all (at least 2; 0 = no limit). A prompt that arrives while sessions generate is then
  // fed over a few steps instead of in one long call that every generating session waits for (see
  // BatchPlanner).
  uint32_t chunked_prefill_tokens = 0;
  // Feed 2..W tokens that stay inside one block (a prompt, the end of a Score call) in one batched span
  // call instead of token by token, when the backend can (ModelBackend::SupportsSpans). Same results to
  // fp32 rounding; a span call's rows are bounded like a score call's blocks.
  bool feed_spans = true;
  // A step's decode rows and span rows in one model call when the backend can (SupportsMixedCalls):
  // their matrix products then read the weights once for both (mixed batches, as vLLM's chunked
  // prefill runs prompt chunks and decode tokens together). Same results to fp32 rounding.
  bool mixed_batches = true;
  // Bytes per Score chunk and per Generate prompt; RESOURCE_EXHAUSTED beyond.
  uint64_t max_chunk_bytes = 1 << 20;
  // Bytes of a Score call's text that may wait for a newline (IncrementalTokenizer); RESOURCE_EXHAUSTED
  // beyond. Must be > 0.
  uint64_t max_line_bytes = uint64_t{1} << 20;
  // A Score call whose client has sent nothing for this long while the engine waits for its input
  // (not paused by backpressure) ends with DEADLINE_EXCEEDED, freeing its queue slot; 0 = never.
  int64_t idle_call_timeout_ms = 30000;
  // Upper bound of GenerateRequest.max_tokens, and the value used when it is unset.
  uint32_t max_tokens_cap = 4096;
  uint32_t default_max_tokens = 128;
  // Upper bound of ScoreRequest.top_k.
  uint32_t max_top_k = 20;
  // Pending tokens per Score call above which the caller is told to pause reading (backpressure).
  // 0 = 32 * W.
  uint32_t max_pending_tokens = 0;
  // Server-wide sampling defaults (below the session defaults).
  SamplingConfig default_sampling;
  // Clock seam (Unix ms); default: the system clock.
  std::function<int64_t()> now_ms;
  // Session persistence: where SaveSession puts snapshots and RestoreSession (and the first use of an
  // id that is not loaded) finds them. Not owned; must outlive the Engine. nullptr: no store (SaveSession
  // can still return bytes, RestoreSession still takes them).
  persistence::SnapshotStore* snapshot_store = nullptr;
  // When set, snapshots are signed (HMAC-SHA256 under this key) and unsigned or wrongly signed ones are
  // refused.
  std::optional<std::string> snapshot_hmac_key;
  // Eviction and autosave (all need snapshot_store; a housekeeping thread applies them every
  // housekeeping_interval_ms). An evicted session is snapshotted, then freed; its next use restores it
  // transparently (see "session persistence" below).
  // A session idle (no active call) for this long is evicted; 0 = never.
  int64_t session_idle_ttl_ms = 0;
  // While the loaded sessions' memory (sessions x ModelMetadata::state_bytes) exceeds this, the least
  // recently used idle sessions are evicted; 0 = no budget. Busy sessions are never evicted, so the
  // budget is soft: it can be exceeded by sessions with active calls until they end.
  uint64_t session_memory_budget_bytes = 0;
  // A session is snapshotted to the store whenever it has advanced this many blocks (W tokens each)
  // since its last autosave, even mid-call (at the block boundary its memory is at); 0 = off. A crash
  // then loses at most this many blocks of a session, plus one housekeeping interval.
  uint32_t autosave_every_blocks = 0;
  int64_t housekeeping_interval_ms = 100;
  // Rewind horizon (server/core/checkpoint_log.h): checkpoints kept per session in host memory, one
  // taken whenever a session reaches a block boundary at least checkpoint_interval_blocks blocks after
  // the previous one. A rewind re-feeds at most about that many blocks. 0 = no checkpoints (rewinding
  // and forking at a position are refused).
  uint32_t checkpoints_per_session = 4;
  uint32_t checkpoint_interval_blocks = 2;
  // Host memory of dropped checkpoints kept for new ones (CheckpointRecycler); 0 = none kept.
  uint64_t checkpoint_recycle_bytes = 128ull << 20;
  // Of that, host memory for checkpoints touched when the engine starts (CheckpointRecycler::Prefill,
  // sized by ModelBackend::ExportBytes), so that new sessions' first checkpoints copy into touched pages;
  // 0 = none.
  uint64_t checkpoint_prefill_bytes = 0;
  // Replicas sharing a store with leases (persistence::SnapshotStore::has_leases, the Redis store): this
  // process's name in the leases ("" = leases off). Every loaded session holds the lease on its store
  // key: taken when it is created, forked or restored (UNAVAILABLE naming the holder when another replica
  // holds it), renewed by the housekeeper every lease_ttl_ms / 3, given up when the session is deleted,
  // evicted, unloaded or saved at shutdown. Snapshots are written only under the lease (fenced); a
  // session whose lease another replica took is dropped here (its calls end with UNAVAILABLE) without
  // touching its snapshot. So a session is live on at most one replica, give or take one lease period
  // after a holder stops renewing (a crash: its sessions are taken over lease_ttl_ms later).
  std::string replica_id;
  int64_t lease_ttl_ms = 10000;
  // Where the engine records queue, session, executor and token metrics (server/metrics/metrics.h);
  // not owned, must outlive the Engine. nullptr = metrics off: nothing is recorded and no clock is
  // read for them.
  metrics::Metrics* metrics = nullptr;
};


class Engine;
struct Job;  // an active call (engine_internal.h)

// Handle of a running Score call. The caller drives input; results arrive at its ScoreSink.
// Append/CloseInput must not be called concurrently with each other (one reader per stream).
class ScoreCall {
 public:
  // Adds a chunk of text. Returns true if the caller may send more now, false if it should wait for
  // ScoreSink::OnInputReady. RESOURCE_EXHAUSTED for an oversized chunk; the call's status if it
  // ended.
  absl::StatusOr<bool> Append(std::string_view chunk);
  // Adds input as token ids (each in [0, vocab_size)) instead of text; a call takes one or the other,
  // never both (FAILED_PRECONDITION). The reported byte spans are offsets in the concatenated pieces'
  // bytes. Same return as Append; INVALID_ARGUMENT names the first id out of range.
  absl::StatusOr<bool> AppendTokens(const std::vector<int32_t>& ids);
  // End of the client's input: the rest is tokenized, the partial block run, then
  // OnFinish(summary).
  absl::Status CloseInput();
  // Stops the call at the next token/block boundary; OnFinish(CANCELLED) follows.
  void Cancel();
  // The client has received the scores of every token before `position` (Session.position units). From
  // then on the session is persisted (autosave, shutdown save) only up to the last line end before
  // that position (SessionState::resume_point), so that a client whose replica died can resume the
  // document exactly: it re-sends the tokens of the unfinished line as ids and the rest as text.
  void Ack(uint64_t position);

 private:
  friend class Engine;
  ScoreCall(Engine* engine, std::shared_ptr<Job> job) : engine_(engine), job_(std::move(job)) {}
  Engine* engine_;
  std::shared_ptr<Job> job_;
};

class GenerateCall {
 public:
  // Stops at the next token boundary; OnFinish(CANCELLED status) follows.
  void Cancel();

 private:
  friend class Engine;
  GenerateCall(Engine* engine, std::shared_ptr<Job> job) : engine_(engine), job_(std::move(job)) {}
  Engine* engine_;
  std::shared_ptr<Job> job_;
};

class Engine {
 public:
  // Starts the executor thread. The backend and tokenizer must agree on the vocabulary.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(EngineOptions options,
                                                        std::unique_ptr<ModelBackend> backend,
                                                        std::shared_ptr<const Tokenizer> tokenizer);
  // Ends every active call (UNAVAILABLE, or finish reason CANCELLED) and joins the executor.
  ~Engine();

  // Tenants (tenant.h): every method below acts for `tenant` (the unnamed tenant by default). It
  // sees, changes and stores only that tenant's sessions and snapshots; another tenant's id or key is
  // NOT_FOUND. Creating, forking and restoring a session beyond Tenant::max_sessions, and starting a
  // call beyond Tenant::max_calls, are RESOURCE_EXHAUSTED naming the quota.
  // requested_id: "" = a new random id; else the id to use (a client-drawn session id, see
  // session_id.h): INVALID_ARGUMENT when malformed, ALREADY_EXISTS when loaded or stored.
  absl::StatusOr<SessionInfo> CreateSession(const std::string& label,
                                            const SamplingOverrides& default_sampling,
                                            const Tenant& tenant = {},
                                            const std::string& requested_id = "");
  absl::StatusOr<SessionInfo> GetSession(const std::string& id, const Tenant& tenant = {});
  std::vector<SessionInfo> ListSessions(const Tenant& tenant = {}) const;
  absl::Status DeleteSession(const std::string& id, const Tenant& tenant = {});

  // ---- session persistence (snapshots: server/persistence/README.md)
  // A session whose id is not loaded but whose snapshot is in the store is restored transparently by
  // GetSession, StartScore, StartGenerate, SaveSession and ForkSession (so sessions outlive a restart or an
  // eviction). DeleteSession removes the loaded session and its stored snapshot.

  // Snapshots an idle session: its exact model memory (copied to host on the executor thread), next-token
  // distribution, position, recent tokens, label and default sampling. Then stores it (to_store, under the
  // session id) and/or returns the bytes. FAILED_PRECONDITION while a Score/Generate call runs on it or
  // when to_store is asked without a store; NOT_FOUND; the store's errors.
  // unload: after storing, free the session here and give up its lease (FAILED_PRECONDITION if a call
  // started on it meanwhile: it stays loaded).
  absl::StatusOr<SavedSession> SaveSession(const std::string& id, bool to_store, bool return_bytes,
                                           const Tenant& tenant = {}, bool unload = false);
  // Restores a session from snapshot bytes (untrusted: verified first). Under the snapshot's own id, or
  // under a fresh id if new_id. DATA_LOSS: corrupt or wrongly signed; FAILED_PRECONDITION: another model
  // or format, or unsigned while a key is set; ALREADY_EXISTS: the id is loaded (and !new_id);
  // RESOURCE_EXHAUSTED: --max_sessions; UNAVAILABLE: shutting down.
  absl::StatusOr<SessionInfo> RestoreSession(std::string_view bytes, bool new_id,
                                             const Tenant& tenant = {});
  // RestoreSession from the store's snapshot under `key` (a session id). NOT_FOUND if absent.
  absl::StatusOr<SessionInfo> RestoreSessionFromStore(const std::string& key, bool new_id,
                                                      const Tenant& tenant = {});
  // A copy of an idle session under a new unguessable id: same memory (shared: it is immutable), position,
  // next-token distribution, recent tokens, label and defaults. The two then evolve independently.
  absl::StatusOr<SessionInfo> ForkSession(const std::string& id, const Tenant& tenant = {});

  // ---- rewinding (engine_checkpoints.cc). Positions are Session.position values: 1 = the start of the
  // document (nothing read), p = after the first p-1 tokens.
  // Rewinds an idle session to `position`, exactly: it then equals (bitwise, on CPU) a session that read
  // only those tokens the same way. Restores the newest checkpoint at or before the position and feeds
  // the tokens after it again on the executor (waiting for that). OUT_OF_RANGE past the session's
  // position; FAILED_PRECONDITION before the earliest checkpoint (the message names the earliest
  // reachable position), while a call runs, or for a damaged session; NOT_FOUND.
  absl::StatusOr<SessionInfo> RewindSession(const std::string& id, uint64_t position,
                                            const Tenant& tenant = {});
  // A new session that is `id` rewound to `position`; `id` itself is untouched. Errors as
  // RewindSession and ForkSession.
  absl::StatusOr<SessionInfo> ForkSessionAt(const std::string& id, uint64_t position,
                                            const Tenant& tenant = {});
  // Prefix reuse (the HTTP edge's prefix cache): the checkpoints of session `id` at or before
  // internal position `max_fed` (tokens fed, BOS included), other than the fresh document, oldest
  // first (NOT_FOUND for an unknown session). CreateSessionFromCheckpoint: a new session that starts
  // from such a checkpoint (its memory imported into a slot); it then continues exactly as the session
  // it came from would have.
  absl::StatusOr<std::vector<std::shared_ptr<const Checkpoint>>> CheckpointsOf(
      const std::string& id, int64_t max_fed, const Tenant& tenant = {});
  absl::StatusOr<SessionInfo> CreateSessionFromCheckpoint(std::shared_ptr<const Checkpoint> checkpoint,
                                                          const std::string& label,
                                                          const Tenant& tenant = {});
  // True when a call on `id` would first read the snapshot store: a store is configured, `id` has a
  // session id's form and no session of that id is loaded. The gRPC layer then starts the call on its
  // blocking pool (after LoadFromStore) rather than on gRPC's own threads. Cheap (one reader lock).
  bool NeedsStoreRead(const std::string& id) const;
  // Restores `id` from the tenant's stored snapshot unless it is loaded: what GetSession, StartScore and
  // the others do first. OK when nothing is stored (the call itself then says NOT_FOUND); the store's
  // and the restore's errors otherwise.
  absl::Status LoadFromStore(const std::string& id, const Tenant& tenant = {}) {
    return LoadIfStored(id, tenant);
  }
  // The tenant's snapshot keys in the store; removing one. FAILED_PRECONDITION without a store.
  absl::StatusOr<std::vector<std::string>> ListSnapshots(const Tenant& tenant = {});
  absl::Status DeleteSnapshot(const std::string& key, const Tenant& tenant = {});

  // Graceful shutdown, step 1: from now on new calls and sessions are refused with UNAVAILABLE; active
  // calls end at their next token or block boundary (Score: UNAVAILABLE after the scores of the tokens
  // processed; Generate: finish_reason CANCELLED). Returns once no call is active.
  void Drain();
  // Step 2 (after Drain): saves every loaded session to the store. Returns how many were saved, or the
  // first error (after trying them all).
  absl::StatusOr<size_t> SaveAllSessions();
  // Sessions evicted and autosaves written so far (by the housekeeping thread).
  uint64_t evictions() const;
  uint64_t autosaves() const;

  // Starts a Score call. NOT_FOUND, FAILED_PRECONDITION (session busy), UNAVAILABLE (queue full),
  // INVALID_ARGUMENT (top_k). The sink must stay valid until its OnFinish.
  absl::StatusOr<std::unique_ptr<ScoreCall>> StartScore(const std::string& session_id,
                                                        const ScoreOptions& options,
                                                        ScoreSink* sink, const Tenant& tenant = {});
  // Starts a Generate call; same codes plus INVALID_ARGUMENT / RESOURCE_EXHAUSTED for parameters.
  absl::StatusOr<std::unique_ptr<GenerateCall>> StartGenerate(const std::string& session_id,
                                                              GenerateParams params,
                                                              GenerateSink* sink,
                                                              const Tenant& tenant = {});

  const ModelMetadata& metadata() const { return backend_->metadata(); }
  const EngineOptions& options() const { return options_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  StatsSnapshot stats() const { return stats_.Snapshot(); }
  uint32_t active_calls() const;
  uint32_t session_count() const;

 private:
  friend class ScoreCall;
  friend class GenerateCall;
  struct Plan;  // one executor iteration's model work (executor.cc)
  using Events = std::vector<std::function<void()>>;

  Engine(EngineOptions options, std::unique_ptr<ModelBackend> backend,
         std::shared_ptr<const Tokenizer> tokenizer);

  // ---- engine.cc: sessions and the caller side of calls
  absl::StatusOr<bool> Append(Job* job, std::string_view chunk);
  absl::StatusOr<bool> AppendTokens(Job* job, const std::vector<int32_t>& ids);
  // Pushes accepted tokens into the job's session; false when the caller should pause.
  bool PushInputLocked(Job* job, const std::vector<TokenSpan>& tokens)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Now + idle_call_timeout_ms (or never).
  absl::Time IdleDeadline() const;
  // A Score call waiting for input that its client has not sent in time.
  static bool IdleTooLong(const Job& job, absl::Time now);
  absl::Status CloseInput(Job* job);
  void Cancel(Job* job);
  void Ack(Job* job, uint64_t position);
  int64_t NowMs() const;
  SessionInfo InfoLocked(const SessionState& s) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The session `id` if `tenant` owns it (NOT_FOUND otherwise).
  absl::StatusOr<std::shared_ptr<SessionState>> FindLocked(const std::string& id,
                                                           const Tenant& tenant) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status AdmitLocked(const SessionState& s, const Tenant& tenant) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED when the tenant holds Tenant::max_sessions sessions already.
  absl::Status CheckTenantSessionsLocked(const Tenant& tenant) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The session, if it can be forked or rewound now: UNAVAILABLE while draining, NOT_FOUND, or
  // FAILED_PRECONDITION when a call runs on it ("...; <verb> it when the call has ended") or it is
  // damaged. (engine_checkpoints.cc)
  absl::StatusOr<std::shared_ptr<SessionState>> FindIdleLocked(const std::string& id,
                                                              const Tenant& tenant,
                                                              const char* verb) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Metrics (no-ops when options_.metrics is null): session occupancy, a call's admission (queue
  // depth), and the first model step that includes a call (queue wait).
  void RecordSessionsLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void RecordAdmittedLocked(Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordStartedLocked(Job& job, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- executor.cc: the only code that calls the backend's model methods
  void ExecutorLoop();
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PlanLocked(Plan* plan, Events* events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunPlan(Plan* plan);
  void RunDecode(Plan* plan);
  void RunScore(Plan* plan);
  void RunSpans(Plan* plan);
  // A plan's decode rows and span rows in one backend call (DecodeAndFeedSpans).
  void RunDecodeAndSpans(Plan* plan);
  // A decode / span call's results into the sessions, calls and streams.
  void ApplyDecode(Plan* plan, absl::StatusOr<std::vector<DecodeResult>>& results);
  void ApplySpans(Plan* plan, absl::StatusOr<std::vector<SpanResult>>& results, int top_k);
  // Applies the results of a score or span call (row r fed the tokens *fed_tokens[r]) to its jobs' sessions.
  void ApplyFed(const std::vector<std::shared_ptr<Job>>& jobs,
                const std::vector<const std::vector<int32_t>*>& fed_tokens,
                absl::StatusOr<std::vector<ScoreBlocksResult>>& results, int top_k);
  void FinishLocked(const std::shared_ptr<Job>& job, absl::Status status, Events* events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Draws the next token of every generating job of `jobs` that PlanLocked will sample this round, at
  // once on the backend's workers (ModelBackend::ForEachRow), into Job::drawn: a draw reads all V
  // log-probabilities, and 32 sessions' draws one after another kept the model waiting ~3 ms a step.
  void DrawTokensLocked(const std::vector<std::shared_ptr<Job>>& jobs, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job's next token (drawn ahead, or drawn here) appended to its session, and its event queued.
  void SampleLocked(Job& job, Events* events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `events` (sink callbacks) on this thread, after the deliverer's batch (so every sink's
  // callbacks stay in order).
  void Deliver(Events* events);
  // Runs `task` on the executor thread between model steps and waits for it.
  absl::Status RunOnExecutor(std::function<void()> task);

  // ---- engine_snapshots.cc: session persistence glue
  // Restores the tenant's stored snapshot of `id` when `id` is not loaded (restore on first use).
  absl::Status LoadIfStored(const std::string& id, const Tenant& tenant);
  // The same, for a caller that holds StoreLock(id) (save, autosave, eviction).
  absl::Status LoadIfStoredOrdered(const std::string& id, const Tenant& tenant);
  // REQUIRES: the caller holds StoreLock(id). at_resume_point: a session with a resume point
  // (SessionState::resume_point) is captured from its newest checkpoint at or before it, which must be
  // newer than its last autosave (FAILED_PRECONDITION otherwise: nothing new to persist).
  absl::StatusOr<persistence::SessionSnapshot> Capture(const std::string& id, const Tenant& tenant,
                                                       bool allow_busy = false,
                                                       bool at_resume_point = false);
  // Installs a verified snapshot as a session of `tenant`; check_quota: Tenant::max_sessions applies
  // (false for the transparent restore on first use).
  // Shutdown save of a session with a resume point: its newest checkpoint at or before it (OK without
  // writing when the store already holds that); unloaded and its lease released when leases are on.
  absl::StatusOr<SavedSession> SaveAtResumePoint(const std::string& id, const Tenant& tenant);
  // Adds the memory and distribution to a snapshot whose metadata and position are filled in, and
  // checks it.
  absl::StatusOr<persistence::SessionSnapshot> CompleteSnapshot(const std::string& id,
                                                                persistence::SessionSnapshot snap,
                                                                HostMemory host,
                                                                const std::vector<float>& next_logprobs) const;
  absl::StatusOr<SessionInfo> Install(persistence::SessionSnapshot snap, bool new_id,
                                      const Tenant& tenant, bool check_quota);
  // Decodes and installs a snapshot, recording one restore (started at t0) in the metrics.
  absl::StatusOr<SessionInfo> RestoreBytes(std::string_view bytes, bool new_id,
                                           std::chrono::steady_clock::time_point t0,
                                           const Tenant& tenant, bool check_quota);
  persistence::ModelIdentity Identity() const;

  // ---- engine_checkpoints.cc
  // A session's empty log (the fresh-document checkpoint at position 0).
  CheckpointLog NewCheckpointLog() const;
  // After a model call advanced `s` (executor thread, lock held): logs the tokens it fed and whether a
  // checkpoint is due now.
  bool LogFedLocked(SessionState& s, int64_t from, const int32_t* ids, size_t n)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the checkpoints LogFedLocked asked for (executor thread, without the lock).
  void TakeCheckpoints(const std::vector<std::shared_ptr<SessionState>>& sessions);

  // ---- engine_leases.cc: which replica holds a session live (see EngineOptions::replica_id)
  bool leases() const;
  // Takes or renews the lease on the tenant's session `id`. UNAVAILABLE naming the holder when another
  // replica holds it; the store's errors. OK when leases are off.
  absl::Status TakeLease(const Tenant& tenant, const std::string& id);
  // A session just put in the table under a fresh id takes its lease; when it cannot, the session
  // leaves the table again and the lease's error is returned. Call without mu_.
  absl::StatusOr<SessionInfo> LeaseNewSession(const Tenant& tenant, SessionInfo info);
  // Gives the lease up (best effort: a failure only delays another replica by one lease period).
  void ReleaseLease(const Tenant& tenant, const std::string& id);
  // Writes a snapshot to the store, fenced by the session's lease when leases are on. ABORTED when another
  // replica holds the lease: the session is then dropped here (DropLost).
  absl::Status PutSnapshot(const Tenant& tenant, const std::string& id, const std::string& bytes);
  // Drops a loaded session another replica took over: its call ends with UNAVAILABLE saying so, it leaves
  // the table, its snapshot stays.
  void DropLost(const std::string& id, const std::string& holder);
  // Housekeeper: renews every loaded session's lease; drops those another replica holds.
  void RenewLeases();

  // ---- housekeeper.cc: idle TTL, memory budget, autosave
  void HousekeepingLoop();
  bool Evict(const std::string& id, const Tenant& tenant, metrics::EvictionReason reason);
  bool Autosave(const std::string& id, const Tenant& tenant);

  // Orders the store operations on one session id (save, autosave, eviction, delete, restore on first
  // use): they hold the id's stripe across their store I/O, so a delete always comes after a save that
  // started before it (and removes what it wrote), and a save that starts after a delete finds no
  // session. Taken before mu_, never while holding it, and never two at once.
  absl::Mutex& StoreLock(const std::string& id) const;

  const EngineOptions options_;
  mutable std::array<absl::Mutex, 64> store_locks_;
  const std::unique_ptr<ModelBackend> backend_;  // model methods: executor thread only
  const std::shared_ptr<const Tokenizer> tokenizer_;
  const int32_t window_;
  ExecutorStats stats_;

  mutable absl::Mutex mu_;
  SessionTable sessions_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);  // active calls, in arrival order
  BatchPlanner planner_ ABSL_GUARDED_BY(mu_);
  const std::shared_ptr<CheckpointRecycler> checkpoint_recycler_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;              // Drain() was called
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);  // run by the executor (persistence)
  bool stop_housekeeping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t autosaves_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread housekeeper_;  // runs HousekeepingLoop when eviction or autosave is on
  // Sink callbacks of an executor iteration's planning (the tokens sampled), run while its model call
  // runs (event_deliverer.h).
  EventDeliverer deliverer_;
  std::thread executor_;
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_ENGINE_H_
