#include "server/http/prefix_cache.h"

#include <algorithm>

namespace brt {
namespace http {

uint64_t PrefixEntry::bytes() const {
  uint64_t b = sizeof(*this) + tenant.size() + tokens.size() * sizeof(int32_t);
  for (const auto& checkpoint : checkpoints) {
    b += checkpoint->memory.kv.data.size() + checkpoint->memory.state.data.size() +
         checkpoint->next_logprobs.size() * sizeof(float) + checkpoint->recent.size() * sizeof(int32_t);
  }
  for (const TokenLogprob& t : scores) b += sizeof(t) + t.top.size() * sizeof(t.top[0]);
  return b;
}

PrefixCache::Hit PrefixCache::Lookup(const std::string& tenant, const std::vector<int32_t>& full,
                                     bool need_scores, int32_t top_k) {
  if (!enabled()) return {};
  absl::MutexLock lock(&mu_);
  auto best = entries_.end();
  std::shared_ptr<const Checkpoint> best_checkpoint;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const PrefixEntry& e = **it;
    if (e.tenant != tenant) continue;
    if (need_scores && (!e.has_scores || e.top_k < top_k)) continue;
    const size_t n = std::min(e.tokens.size(), full.size());
    const size_t common =
        std::mismatch(e.tokens.begin(), e.tokens.begin() + n, full.begin()).first - e.tokens.begin();
    for (auto c = e.checkpoints.rbegin(); c != e.checkpoints.rend(); ++c) {
      if (static_cast<size_t>((*c)->position) > common) continue;
      if (best_checkpoint == nullptr || (*c)->position > best_checkpoint->position) {
        best = it;
        best_checkpoint = *c;
      }
      break;
    }
  }
  if (best == entries_.end()) {
    stats_.misses++;
    return {};
  }
  std::shared_ptr<const PrefixEntry> hit = *best;
  entries_.erase(best);
  entries_.push_front(hit);
  stats_.hits++;
  stats_.reused_tokens += static_cast<uint64_t>(best_checkpoint->position);
  return {hit, best_checkpoint};
}

void PrefixCache::Insert(std::shared_ptr<const PrefixEntry> entry) {
  if (!enabled()) return;
  const uint64_t size = entry->bytes();
  if (size > max_bytes_) return;
  absl::MutexLock lock(&mu_);
  // An entry for the same tokens that is no better goes (the new one is at least as useful).
  for (auto it = entries_.begin(); it != entries_.end();) {
    const PrefixEntry& e = **it;
    const bool same = e.tenant == entry->tenant && e.tokens == entry->tokens;
    if (same && (!e.has_scores || (entry->has_scores && entry->top_k >= e.top_k))) {
      bytes_ -= e.bytes();
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  entries_.push_front(std::move(entry));
  bytes_ += size;
  while (bytes_ > max_bytes_ && !entries_.empty()) {
    bytes_ -= entries_.back()->bytes();
    entries_.pop_back();
  }
}

PrefixCacheStats PrefixCache::stats() const {
  absl::MutexLock lock(&mu_);
  PrefixCacheStats s = stats_;
  s.entries = entries_.size();
  s.bytes = bytes_;
  return s;
}

}  // namespace http
}  // namespace brt
