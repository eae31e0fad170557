// RedisSnapshotStore: snapshots as Redis string values under `<prefix><key>`, so several server replicas
// share one set of sessions. Uses hiredis' synchronous API over one connection.
//
// - SET (atomic replace), GET, DEL, SCAN MATCH <prefix>* (the prefix is glob-escaped).
// - Timeouts on connect and on every command. When a command fails on the connection (refused, reset,
//   timed out, server gone) the connection is dropped, re-opened and the command retried once (all four are
//   idempotent); if that fails too, UNAVAILABLE. The next call tries to connect again, so the store recovers
//   by itself when Redis comes back.
// - Redis error replies: OOM is RESOURCE_EXHAUSTED; LOADING, BUSY, READONLY, MASTERDOWN are UNAVAILABLE;
//   others INTERNAL.
// - Durability is Redis' own (its appendonly/save settings); this store adds none.
// Thread safety: safe for concurrent use; calls are serialized on the connection by a mutex.
#ifndef BRT_SERVER_PERSISTENCE_REDIS_SNAPSHOT_STORE_H_
#define BRT_SERVER_PERSISTENCE_REDIS_SNAPSHOT_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

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
  uint64_t max_value_bytes = uint64_t{4} << 30;
};

// Parses redis://[:password@]host[:port][/db][?prefix=P&connect_timeout_ms=N&timeout_ms=N] into `config`
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
  // Opens a connection if there is none. UNAVAILABLE on failure.
  absl::Status EnsureConnectedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DisconnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs argv as one command, reconnecting and retrying once on a connection failure. Never returns an
  // error reply as OK: those become statuses too.
  absl::StatusOr<Reply> CommandLocked(const std::vector<absl::string_view>& argv, absl::string_view what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RedisStoreConfig config_;
  absl::Mutex mu_;
  redisContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace brt::persistence

#endif  // BRT_SERVER_PERSISTENCE_REDIS_SNAPSHOT_STORE_H_
