// RedisSnapshotStore: snapshots as Redis string values under `<prefix><key>`, so several server replicas
// share one set of sessions. Uses hiredis' synchronous API over a small pool of connections.
//
// - SET (atomic replace), GET, DEL, SCAN MATCH <prefix>* (the prefix is glob-escaped).
// - Up to `pool_size` connections, opened on demand. A call borrows an idle one (or opens one) and does its
//   network I/O holding no lock, so one slow or hung command delays only its own caller; when all are
//   busy a caller waits for one, up to its time budget, then gets UNAVAILABLE naming the pool size.
// - Time budget: each command gets `command_timeout_ms`, or less when the calling thread has a
//   ScopedStoreDeadline (the request's deadline) that comes sooner: DEADLINE_EXCEEDED once it has passed.
// - When a command fails on its connection (refused, reset, server gone) the connection is closed and the
//   command retried once on another (all commands here are idempotent); if that fails too, UNAVAILABLE.
//   A command that used up its whole time budget is not retried. Later calls open new connections, so the store recovers by itself when Redis comes back.
// - Redis error replies: OOM is RESOURCE_EXHAUSTED; LOADING, BUSY, READONLY, MASTERDOWN are UNAVAILABLE;
//   others INTERNAL.
// - Durability is Redis' own (its appendonly/save settings); this store adds none.
// Thread safety: safe for concurrent use; the pool's bookkeeping is guarded by a mutex that is never held
// during network I/O.
#ifndef BRT_SERVER_PERSISTENCE_REDIS_SNAPSHOT_STORE_H_
#define BRT_SERVER_PERSISTENCE_REDIS_SNAPSHOT_STORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/persistence/snapshot_store.h"

struct redisContext;
struct redisReply;

namespace brt::persistence {

struct RedisStoreConfig {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string password;  // AUTH when non-empty
  std::string prefix = "brt:snap:";
  int64_t connect_timeout_ms = 2000;
  int64_t command_timeout_ms = 10000;
  int pool_size = 4;  // connections at most (URI parameter pool=N, 1..64)
  uint64_t max_value_bytes = uint64_t{4} << 30;
};

// Parses redis://[:password@]host[:port][/db][?prefix=P&connect_timeout_ms=N&timeout_ms=N&pool=N] into
// `config`
// (fields absent from the URI keep their values). INVALID_ARGUMENT saying what is malformed.
absl::Status ParseRedisUri(std::string_view uri, RedisStoreConfig* config);

class RedisSnapshotStore : public SnapshotStore {
 public:
  // Connects, authenticates, selects the db and PINGs; UNAVAILABLE if Redis cannot be reached.
  static absl::StatusOr<std::unique_ptr<RedisSnapshotStore>> Create(const RedisStoreConfig& config);
  ~RedisSnapshotStore() override;

  absl::Status Put(std::string_view key, std::string_view bytes) override;
  absl::StatusOr<std::string> Get(std::string_view key) override;
  absl::Status Delete(std::string_view key) override;
  absl::StatusOr<std::vector<std::string>> List() override;
  std::string Describe() const override;
  // Leases live under "lease:<prefix><key>" (outside the snapshots' prefix, so List never shows them),
  // each taken, renewed, released and checked by a Lua script (one atomic step on the server).
  bool has_leases() const override { return true; }
  absl::StatusOr<bool> AcquireLease(std::string_view key, std::string_view owner, int64_t ttl_ms,
                                    std::string* holder) override;
  absl::Status ReleaseLease(std::string_view key, std::string_view owner) override;
  absl::Status PutLeased(std::string_view key, std::string_view bytes, std::string_view owner,
                         int64_t ttl_ms) override;

 private:
  struct ReplyDeleter {
    void operator()(redisReply* r) const;
  };
  using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

  explicit RedisSnapshotStore(const RedisStoreConfig& config);

  // A Put's key and size checks (INVALID_ARGUMENT, RESOURCE_EXHAUSTED).
  absl::Status CheckPut(std::string_view key, std::string_view bytes) const;
  // A new connection, authenticated and on the configured db. UNAVAILABLE (or FAILED_PRECONDITION for a
  // refused AUTH/SELECT) on failure. Touches no shared state.
  absl::StatusOr<redisContext*> Connect() const;
  // An idle connection, or a new one while fewer than pool_size are open; waits until `deadline` for one
  // to come back when all are busy (UNAVAILABLE then).
  absl::StatusOr<redisContext*> Borrow(std::chrono::steady_clock::time_point deadline,
                                       absl::string_view what) ABSL_LOCKS_EXCLUDED(mu_);
  // Gives a borrowed connection back; a broken one is closed.
  void Return(redisContext* c, bool healthy) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs argv as one command on a pooled connection, retrying once on a connection failure. Never
  // returns an error reply as OK: those become statuses too.
  absl::StatusOr<Reply> Command(const std::vector<absl::string_view>& argv, absl::string_view what);

  const RedisStoreConfig config_;
  absl::Mutex mu_;
  std::vector<redisContext*> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle plus borrowed
};

}  // namespace brt::persistence

#endif  // BRT_SERVER_PERSISTENCE_REDIS_SNAPSHOT_STORE_H_
