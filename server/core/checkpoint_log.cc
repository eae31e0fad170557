#include "server/core/checkpoint_log.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace brt {

CheckpointLog::CheckpointLog(uint32_t max_checkpoints, int64_t interval)
    : max_checkpoints_(max_checkpoints), interval_(std::max<int64_t>(1, interval)) {}

void CheckpointLog::Reset(std::shared_ptr<const Checkpoint> c) {
  checkpoints_.clear();
  tokens_.clear();
  if (!enabled()) return;
  start_ = c->position;
  checkpoints_.push_back(std::move(c));
}

void CheckpointLog::Append(int64_t position, const int32_t* ids, size_t n) {
  if (!enabled() || checkpoints_.empty()) return;
  if (position != end()) {  // a gap (should not happen): the log no longer covers the session
    checkpoints_.clear();
    tokens_.clear();
    return;
  }
  tokens_.insert(tokens_.end(), ids, ids + n);
}

bool CheckpointLog::Due(int64_t position) const {
  if (!enabled()) return false;
  if (checkpoints_.empty()) return true;
  return position >= checkpoints_.back()->position + interval_ && position == end();
}

void CheckpointLog::Add(std::shared_ptr<const Checkpoint> c) {
  if (!enabled()) return;
  if (checkpoints_.empty()) {
    Reset(std::move(c));
    return;
  }
  if (c->position != end() || c->position <= checkpoints_.back()->position) return;
  checkpoints_.push_back(std::move(c));
  while (checkpoints_.size() > max_checkpoints_) {
    checkpoints_.pop_front();
    const int64_t drop = checkpoints_.front()->position - start_;
    tokens_.erase(tokens_.begin(), tokens_.begin() + drop);
    start_ = checkpoints_.front()->position;
  }
}

void CheckpointLog::TruncateTo(int64_t position) {
  while (!checkpoints_.empty() && checkpoints_.back()->position > position) checkpoints_.pop_back();
  if (checkpoints_.empty()) {
    tokens_.clear();
    return;
  }
  if (position < end()) tokens_.resize(static_cast<size_t>(position - start_));
}

std::vector<std::shared_ptr<const Checkpoint>> CheckpointLog::AtOrBefore(int64_t position) const {
  std::vector<std::shared_ptr<const Checkpoint>> out;
  for (const auto& c : checkpoints_) {
    if (c->position <= position && !c->fresh) out.push_back(c);
  }
  return out;
}

absl::StatusOr<RewindPlan> CheckpointLog::Plan(int64_t position) const {
  if (checkpoints_.empty() || position < checkpoints_.front()->position) {
    const std::string reach =
        checkpoints_.empty()
            ? std::string("no checkpoint is kept yet (one is taken at the next block boundary)")
            : absl::StrCat("the earliest reachable position is ",
                           std::max<int64_t>(1, checkpoints_.front()->position));
    return absl::FailedPreconditionError(absl::StrCat(
        "position ", std::max<int64_t>(1, position), " is beyond the session's checkpoint horizon: ",
        reach, " (the server keeps --checkpoints_per_session checkpoints, one every "
        "--checkpoint_interval_blocks blocks)"));
  }
  auto it = std::upper_bound(
      checkpoints_.begin(), checkpoints_.end(), position,
      [](int64_t p, const std::shared_ptr<const Checkpoint>& c) { return p < c->position; });
  RewindPlan plan;
  plan.from = *std::prev(it);
  plan.tokens.assign(tokens_.begin() + (plan.from->position - start_),
                     tokens_.begin() + (position - start_));
  return plan;
}

}  // namespace brt
