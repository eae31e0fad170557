// SnapshotStore: where encoded session snapshots live between processes, keyed by session id. One interface,
// two implementations chosen by a URI-like flag value:
//   file:///var/lib/brt/snapshots            a local directory (FileSnapshotStore, the default)
//   redis://127.0.0.1:6379/0?prefix=brt:     a Redis server shared by replicas (RedisSnapshotStore)
//
// Contract
// - Values are opaque bytes (this layer does not decode snapshots). Put replaces the value atomically: a
//   reader sees the old value or the new one, complete, never a mix or a prefix, even if the writer
//   crashes mid-Put.
// - Keys are validated by every method: 1 to 128 characters from [A-Za-z0-9_-] (session ids are "s_" + 32
//   hex). Anything else is INVALID_ARGUMENT, so client bytes never reach a file name or a Redis command
//   unchecked.
// - Errors: INVALID_ARGUMENT (key), NOT_FOUND (Get/Delete of an absent key), RESOURCE_EXHAUSTED (value over
//   the size limit, disk or Redis memory full), UNAVAILABLE (Redis unreachable: retry later), INTERNAL or
//   the errno's code for other I/O failures. Messages name the key and the store.
// - Thread safety: every implementation is safe for concurrent use without external synchronization.
#ifndef BRT_SERVER_PERSISTENCE_SNAPSHOT_STORE_H_
#define BRT_SERVER_PERSISTENCE_SNAPSHOT_STORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace brt::persistence {

class FileEnv;

class SnapshotStore {
 public:
  virtual ~SnapshotStore() = default;

  // Stores `bytes` under `key`, replacing any previous value atomically (and durably, for the file store).
  virtual absl::Status Put(std::string_view key, std::string_view bytes) = 0;
  // The value under `key`; NOT_FOUND if there is none.
  virtual absl::StatusOr<std::string> Get(std::string_view key) = 0;
  // Removes `key`; NOT_FOUND if there was no value.
  virtual absl::Status Delete(std::string_view key) = 0;
  // Every key with a complete value, sorted. Not a snapshot in time: concurrent Puts may or may not show.
  virtual absl::StatusOr<std::vector<std::string>> List() = 0;
  // Where the store is, for logs ("file:///var/lib/brt", "redis://127.0.0.1:6379/0 prefix 'brt:'"); no
  // passwords.
  virtual std::string Describe() const = 0;

  // ---- leases: which process holds a session live when several replicas share the store. A lease on
  // `key` names its holder (`owner`, a replica id) and expires ttl_ms after it was last taken or renewed,
  // so a crashed holder's sessions become free by themselves. A store that several processes cannot
  // share (the file store: one directory, one server) has no leases: every request is granted and Put
  // is not fenced.
  virtual bool has_leases() const { return false; }
  // Takes the lease on `key` for `owner`, or renews it when `owner` holds it: true. False when another
  // owner holds it (then *holder, if not null, names it). UNAVAILABLE when the store cannot be reached.
  virtual absl::StatusOr<bool> AcquireLease(std::string_view key, std::string_view owner, int64_t ttl_ms,
                                            std::string* holder) {
    return true;
  }
  // Gives up the lease on `key` if `owner` holds it (nothing otherwise).
  virtual absl::Status ReleaseLease(std::string_view key, std::string_view owner) {
    return absl::OkStatus();
  }
  // A fenced Put: atomically, only if the lease on `key` is free or held by `owner` (it is then taken or
  // renewed for ttl_ms). ABORTED, writing nothing, when another owner holds it: a replica that lost a
  // session to another can no longer overwrite it.
  virtual absl::Status PutLeased(std::string_view key, std::string_view bytes, std::string_view owner,
                                 int64_t ttl_ms) {
    return Put(key, bytes);
  }
};

// The deadline of the request on whose behalf this thread calls a store, while an object of this class
// lives on the thread's stack (scopes nest; the inner one wins while it lives). A store that talks to a
// network service gives each operation at most the time left, and DEADLINE_EXCEEDED once none is; the
// file store ignores it. Thread safety: a thread-local; each thread sees only its own scopes.
class ScopedStoreDeadline {
 public:
  explicit ScopedStoreDeadline(std::chrono::steady_clock::time_point deadline);
  ~ScopedStoreDeadline();
  ScopedStoreDeadline(const ScopedStoreDeadline&) = delete;
  ScopedStoreDeadline& operator=(const ScopedStoreDeadline&) = delete;
  // The innermost live scope's deadline on this thread; time_point::max() when there is none.
  static std::chrono::steady_clock::time_point Current();

 private:
  std::chrono::steady_clock::time_point previous_;
};

// OK if `key` is 1..128 characters of [A-Za-z0-9_-]; INVALID_ARGUMENT saying why not otherwise.
absl::Status ValidateSnapshotKey(std::string_view key);

struct StoreOptions {
  // Largest value Put accepts and Get returns (RESOURCE_EXHAUSTED beyond).
  uint64_t max_value_bytes = uint64_t{4} << 30;
  // File store: the file-system seam (nullptr: the real POSIX file system). Not owned; must outlive the
  // store.
  FileEnv* env = nullptr;
  // File store: fsync the file and the directory on Put/Delete. Turn off only in tests and benchmarks.
  bool durable = true;
  // File store: remove temporary files left by a crashed writer when the store is created. Assumes one
  // server process per directory (share sessions across replicas through Redis instead).
  bool clean_temp_files = true;
  // Redis: connect and per-command timeouts; the URI's connect_timeout_ms / timeout_ms override them.
  int64_t redis_connect_timeout_ms = 2000;
  int64_t redis_command_timeout_ms = 10000;
};

// Creates the store described by `uri`:
//   file:///abs/dir  or a plain path (absolute or relative): FileSnapshotStore; the directory is created.
//   redis://[:password@]host[:port][/db][?prefix=P&connect_timeout_ms=N&timeout_ms=N]: RedisSnapshotStore
//     (port 6379, db 0, prefix "brt:snap:" by default); connects and PINGs now, UNAVAILABLE if it cannot.
// INVALID_ARGUMENT for a malformed URI or an unknown scheme.
absl::StatusOr<std::unique_ptr<SnapshotStore>> CreateSnapshotStore(std::string_view uri,
                                                                   const StoreOptions& options = {});

}  // namespace brt::persistence

#endif  // BRT_SERVER_PERSISTENCE_SNAPSHOT_STORE_H_
