// PeerLimiter: at most N concurrent streaming calls (Score, Generate) per client address, so that one
// client cannot take every slot of the scheduler queue (--max_queue) from the others. The address is
// the peer's IP without its port (all connections of one host count together).
//
// Thread safety: thread-safe (one mutex). A Slot releases its count when destroyed, from any thread.
#ifndef BRT_SERVER_GRPC_PEER_LIMITER_H_
#define BRT_SERVER_GRPC_PEER_LIMITER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace brt {

class PeerLimiter {
 public:
  // limit == 0: no limit.
  explicit PeerLimiter(uint32_t limit) : limit_(limit) {}

  class Slot {
   public:
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    friend class PeerLimiter;
    Slot(PeerLimiter* owner, std::string host) : owner_(owner), host_(std::move(host)) {}
    PeerLimiter* owner_;
    std::string host_;
  };

  // A slot for one call from `peer` (gRPC's peer string, "ipv4:1.2.3.4:5678"), or RESOURCE_EXHAUSTED
  // naming the limit.
  absl::StatusOr<std::unique_ptr<Slot>> Acquire(std::string_view peer);
  uint32_t active(std::string_view peer) const;

  // "ipv4:1.2.3.4:5678" -> "ipv4:1.2.3.4"; "ipv6:[::1]:5678" -> "ipv6:[::1]".
  static std::string HostOf(std::string_view peer);

 private:
  void Release(const std::string& host);
  const uint32_t limit_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint32_t> active_ ABSL_GUARDED_BY(mu_);
};

}  // namespace brt

#endif  // BRT_SERVER_GRPC_PEER_LIMITER_H_
