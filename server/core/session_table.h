// SessionTable: the loaded sessions by id, their capacity, and the pool slots their model memory
// occupies. SessionState is one session's bookkeeping; its model memory lives in the backend's pools
// at `slot` (server/model/backend.h).
//
// Slots. A new session has no slot (-1): it is a fresh document, and the executor gives it one (and
// initialises it) the first time it feeds a token. A slot returns to the free list when its session
// leaves the table; it is reused only after the executor initialises it again, which happens after any
// model call still using the old session has returned (the executor runs one thing at a time), so a
// freed slot is never written by two sessions at once.
//
// Thread safety: NOT thread-safe. The Engine guards its table with Engine::mu_ (every method is called
// with that lock held). SessionState fields follow the same rule.
#ifndef BRT_SERVER_CORE_SESSION_TABLE_H_
#define BRT_SERVER_CORE_SESSION_TABLE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/checkpoint_log.h"
#include "server/core/sampling_params.h"

namespace brt {

struct Job;  // an active call (engine_internal.h)

// A token accepted into a session but not yet fed to the model.
struct PendingToken {
  int32_t id = 0;
  bool report = false;  // a Score call wants its score (false for BOS, prompt and generated tokens)
  uint64_t begin = 0;   // byte span in the Score call's text
  uint64_t end = 0;
};

struct SessionState {
  std::string id;
  std::string tenant;  // the owner's Tenant::name ("" = the unnamed tenant); never changes
  std::string label;
  SamplingOverrides defaults;
  int64_t created_ms = 0;
  int64_t last_used_ms = 0;
  int32_t slot = -1;                 // backend pool slot; -1 = fresh document without a slot yet
  std::vector<float> next_logprobs;  // distribution at position `fed`; empty before BOS is fed
  int64_t fed = 0;                   // tokens fed, BOS included: the position of the next token
  std::deque<PendingToken> pending;  // accepted, not yet fed (front = position `fed`)
  std::vector<int32_t> recent;       // last fed text tokens, for the repetition penalty
  std::shared_ptr<Job> job;          // the active call, if any
  int64_t autosaved_fed = 0;         // `fed` at the last autosave (or restore)
  bool deleted = false;
  // A model call failed while this session's memory was being advanced in place: its memory can no
  // longer be trusted. New calls are refused; restore it from a snapshot.
  bool damaged = false;
  // Recent checkpoints and the tokens since, for rewinding and forking at a position.
  CheckpointLog checkpoints;
  // The resume point of a Score call whose client acknowledges what it has received (ScoreCall::Ack):
  // `fed` just after the last line-ending token the client has the score of; -1 = none (the call does
  // not acknowledge). While set, the session is persisted (autosave, shutdown) from its newest
  // checkpoint at or before it, never beyond: a client can then always resume the document exactly.
  int64_t resume_point = -1;
};

// Free pool slots [0, capacity), lowest first (keeps the pools' used prefix dense).
class SlotAllocator {
 public:
  explicit SlotAllocator(int32_t capacity);
  // A free slot, or RESOURCE_EXHAUSTED when every slot is taken.
  absl::StatusOr<int32_t> Take();
  void Release(int32_t slot);
  int32_t in_use() const { return in_use_; }
  int32_t capacity() const { return capacity_; }

 private:
  int32_t capacity_;
  int32_t in_use_ = 0;
  std::vector<int32_t> free_;  // a min-heap
};

class SessionTable {
 public:
  // At most max_sessions sessions (and as many slots).
  explicit SessionTable(uint32_t max_sessions);

  // Adds `s` under a new unguessable id (new_id) or under s->id. RESOURCE_EXHAUSTED at capacity
  // (the message names --max_sessions); ALREADY_EXISTS when s->id is taken.
  absl::Status Insert(std::shared_ptr<SessionState> s, bool new_id);
  // INVALID_ARGUMENT for an empty id, NOT_FOUND (the id quoted, truncated) when absent.
  absl::StatusOr<std::shared_ptr<SessionState>> Find(const std::string& id) const;
  // Find for a caller acting for `tenant`: another tenant's session is NOT_FOUND with the same
  // message as an absent id (ids cannot be probed).
  absl::StatusOr<std::shared_ptr<SessionState>> FindFor(const std::string& id,
                                                        const std::string& tenant) const;
  // Loaded sessions owned by `tenant`.
  size_t CountOf(const std::string& tenant) const;
  bool Contains(const std::string& id) const { return sessions_.contains(id); }
  // Removes the session and frees its slot; false when absent.
  bool Erase(const std::string& id);
  size_t size() const { return sessions_.size(); }
  uint32_t max_sessions() const { return max_sessions_; }
  absl::Status CheckCapacity() const;

  // Gives `s` a slot if it has none; true when the slot is new (the caller must initialise it).
  absl::StatusOr<bool> EnsureSlot(SessionState& s);
  // Reserves a slot for a session not yet inserted (restore); Release it if the insert fails.
  absl::StatusOr<int32_t> ReserveSlot() { return slots_.Take(); }
  void ReleaseSlot(int32_t slot) { slots_.Release(slot); }
  const SlotAllocator& slots() const { return slots_; }

  // Idle sessions (no active call), least recently used first.
  std::vector<std::pair<int64_t, std::string>> IdleByLastUse() const;
  void ForEach(const std::function<void(const SessionState&)>& fn) const;

 private:
  uint32_t max_sessions_;
  SlotAllocator slots_;
  absl::flat_hash_map<std::string, std::shared_ptr<SessionState>> sessions_;
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_SESSION_TABLE_H_
