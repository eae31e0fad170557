// CheckpointLog: one session's recent checkpoints and the tokens fed since the oldest, so that the
// session can be rewound (or forked) to any position inside that horizon exactly: restore the newest
// checkpoint at or before the position, then feed the logged tokens from there to the position again.
//
// A checkpoint is the session's model memory copied to host memory at a block boundary (the executor
// takes one whenever a session lands on a boundary at least `interval` tokens after the previous one),
// plus its next-token distribution and repetition window. A fresh session starts with the implicit
// checkpoint "fresh document" at position 0; a restored session with one at its restored position.
// At most `max_checkpoints` are kept (the oldest are dropped, and the tokens before the new oldest
// with them), so a session's host memory for rewinding is bounded by
//   max_checkpoints * (ModelMetadata::state_bytes + 4 * vocab) + 4 * max_checkpoints * interval bytes.
//
// Positions here are the engine's `fed` counts (tokens fed, BOS included).
//
// Thread safety: NOT thread-safe; it lives in SessionState and follows its rule (Engine::mu_).
#ifndef BRT_SERVER_CORE_CHECKPOINT_LOG_H_
#define BRT_SERVER_CORE_CHECKPOINT_LOG_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/backend.h"

namespace brt {

struct Checkpoint {
  int64_t position = 0;  // fed at capture
  bool fresh = false;    // the memory of a fresh document (memory, next_logprobs, recent empty)
  HostMemory memory;
  std::vector<float> next_logprobs;
  std::vector<int32_t> recent;
};

// What a rewind to some position must do: restore `from`, then feed `tokens`.
struct RewindPlan {
  std::shared_ptr<const Checkpoint> from;
  std::vector<int32_t> tokens;
};

class CheckpointLog {
 public:
  // max_checkpoints == 0 turns the log off (nothing is kept; every rewind is refused).
  CheckpointLog(uint32_t max_checkpoints = 0, int64_t interval = 1);

  bool enabled() const { return max_checkpoints_ > 0; }
  // Starts over at `c` (a fresh session, a restore, or the target of a rewind).
  void Reset(std::shared_ptr<const Checkpoint> c);
  // Tokens fed from `position` on (position must be where the log ends).
  void Append(int64_t position, const int32_t* ids, size_t n);
  // Whether a checkpoint at `position` (a block boundary) is due.
  bool Due(int64_t position) const;
  void Add(std::shared_ptr<const Checkpoint> c);
  // Drops the checkpoints after `position` and the tokens from `position` on (the session was rewound
  // to it).
  void TruncateTo(int64_t position);
  // FAILED_PRECONDITION naming the earliest reachable position when `position` is before it (or no
  // checkpoint is kept); `position` must be <= where the log ends.
  absl::StatusOr<RewindPlan> Plan(int64_t position) const;

  // The checkpoints at or before `position`, other than the fresh document, oldest first.
  std::vector<std::shared_ptr<const Checkpoint>> AtOrBefore(int64_t position) const;

  // The token fed at `position` (BOS at 0), or -1 when it is outside the log.
  int32_t TokenAt(int64_t position) const {
    if (position < start_ || position >= end()) return -1;
    return tokens_[static_cast<size_t>(position - start_)];
  }
  // Earliest position a rewind can reach; -1 when none.
  int64_t earliest() const { return checkpoints_.empty() ? -1 : checkpoints_.front()->position; }
  size_t size() const { return checkpoints_.size(); }
  int64_t end() const { return start_ + static_cast<int64_t>(tokens_.size()); }

 private:
  uint32_t max_checkpoints_;
  int64_t interval_;
  std::deque<std::shared_ptr<const Checkpoint>> checkpoints_;  // oldest first
  int64_t start_ = 0;             // position of tokens_[0] (the oldest checkpoint's)
  std::vector<int32_t> tokens_;   // fed since start_
};

}  // namespace brt

#endif  // BRT_SERVER_CORE_CHECKPOINT_LOG_H_
