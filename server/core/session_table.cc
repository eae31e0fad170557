#include "server/core/session_table.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "server/core/session_id.h"

namespace brt {

SlotAllocator::SlotAllocator(int32_t capacity) : capacity_(capacity) {
  free_.reserve(capacity);
  for (int32_t i = capacity - 1; i >= 0; --i) free_.push_back(i);
  std::make_heap(free_.begin(), free_.end(), std::greater<int32_t>());
}

absl::StatusOr<int32_t> SlotAllocator::Take() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", capacity_, " session memory slots are in use (--max_sessions)"));
  }
  std::pop_heap(free_.begin(), free_.end(), std::greater<int32_t>());
  const int32_t slot = free_.back();
  free_.pop_back();
  in_use_++;
  return slot;
}

void SlotAllocator::Release(int32_t slot) {
  if (slot < 0 || slot >= capacity_) return;
  free_.push_back(slot);
  std::push_heap(free_.begin(), free_.end(), std::greater<int32_t>());
  in_use_--;
}

SessionTable::SessionTable(uint32_t max_sessions)
    : max_sessions_(max_sessions), slots_(static_cast<int32_t>(max_sessions)) {}

absl::Status SessionTable::CheckCapacity() const {
  if (sessions_.size() >= max_sessions_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds its maximum of ", max_sessions_,
                     " sessions (--max_sessions); delete some first"));
  }
  return absl::OkStatus();
}

absl::Status SessionTable::Insert(std::shared_ptr<SessionState> s, bool new_id) {
  absl::Status cap = CheckCapacity();
  if (!cap.ok()) return cap;
  if (new_id) {
    do {
      s->id = NewSessionId();
    } while (sessions_.contains(s->id));
  } else if (sessions_.contains(s->id)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "session ", s->id, " is already loaded; delete it first or restore with new_id"));
  }
  std::string id = s->id;
  sessions_[id] = std::move(s);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<SessionState>> SessionTable::Find(const std::string& id) const {
  if (id.empty()) return absl::InvalidArgumentError("session_id is required");
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no session ", id.size() > 64 ? id.substr(0, 64) + "..." : id));
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<SessionState>> SessionTable::FindFor(
    const std::string& id, const std::string& tenant) const {
  auto found = Find(id);
  if (found.ok() && (*found)->tenant != tenant) {
    return absl::NotFoundError(
        absl::StrCat("no session ", id.size() > 64 ? id.substr(0, 64) + "..." : id));
  }
  return found;
}

size_t SessionTable::CountOf(const std::string& tenant) const {
  size_t n = 0;
  for (const auto& [id, s] : sessions_) n += s->tenant == tenant ? 1 : 0;
  return n;
}

bool SessionTable::Erase(const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  if (it->second->slot >= 0) {
    slots_.Release(it->second->slot);
    it->second->slot = -1;
  }
  sessions_.erase(it);
  return true;
}

absl::StatusOr<bool> SessionTable::EnsureSlot(SessionState& s) {
  if (s.slot >= 0) return false;
  auto slot = slots_.Take();
  if (!slot.ok()) return slot.status();
  s.slot = *slot;
  return true;
}

std::vector<std::pair<int64_t, std::string>> SessionTable::IdleByLastUse() const {
  std::vector<std::pair<int64_t, std::string>> idle;
  for (const auto& [id, s] : sessions_) {
    if (s->job == nullptr) idle.emplace_back(s->last_used_ms, id);
  }
  std::sort(idle.begin(), idle.end());
  return idle;
}

void SessionTable::ForEach(const std::function<void(const SessionState&)>& fn) const {
  for (const auto& [id, s] : sessions_) fn(*s);
}

}  // namespace brt
