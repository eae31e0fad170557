#include "server/grpc/peer_limiter.h"

#include "absl/strings/str_cat.h"

namespace brt {

std::string PeerLimiter::HostOf(std::string_view peer) {
  const size_t colon = peer.rfind(':');
  const size_t bracket = peer.rfind(']');
  if (colon == std::string_view::npos || (bracket != std::string_view::npos && colon < bracket)) {
    return std::string(peer);
  }
  // "ipv4:host:port": the first colon ends the scheme, the last starts the port.
  if (peer.find(':') == colon) return std::string(peer);
  return std::string(peer.substr(0, colon));
}

absl::StatusOr<std::unique_ptr<PeerLimiter::Slot>> PeerLimiter::Acquire(std::string_view peer) {
  std::string host = HostOf(peer);
  if (limit_ > 0) {
    absl::MutexLock lock(&mu_);
    uint32_t& n = active_[host];
    if (n >= limit_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "this client (", host, ") already has ", n, " Score/Generate calls running, the most one "
          "client may have (--max_calls_per_peer); wait for one to end"));
    }
    ++n;
  }
  return std::unique_ptr<Slot>(new Slot(limit_ > 0 ? this : nullptr, std::move(host)));
}

uint32_t PeerLimiter::active(std::string_view peer) const {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(HostOf(peer));
  return it == active_.end() ? 0 : it->second;
}

void PeerLimiter::Release(const std::string& host) {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(host);
  if (it == active_.end()) return;
  if (--it->second == 0) active_.erase(it);
}

PeerLimiter::Slot::~Slot() {
  if (owner_ != nullptr) owner_->Release(host_);
}

}  // namespace brt
