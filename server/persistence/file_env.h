// FileEnv: the file-system operations FileSnapshotStore needs, behind an interface so that tests can inject
// faults (failed writes, short disks, failed fsync or rename) the way LevelDB's Env does.
//
// Paths are plain strings; the store builds them only from validated keys. Errors follow the errno (see
// IoError): ENOENT is NOT_FOUND, ENOSPC RESOURCE_EXHAUSTED, EACCES PERMISSION_DENIED, EIO INTERNAL, ...
// Thread safety: implementations must be safe for concurrent use; a WritableFile is used by one thread.
#ifndef BRT_SERVER_PERSISTENCE_FILE_ENV_H_
#define BRT_SERVER_PERSISTENCE_FILE_ENV_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace brt::persistence {

// The status for a failed file operation: absl::ErrnoToStatus, except that errnos Abseil calls UNKNOWN
// (EIO, ...) are INTERNAL. Implementations of FileEnv, fakes included, report errors through it.
absl::Status IoError(int err, std::string_view what);

// A file being written. The destructor closes it (without syncing) if Close was not called.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual absl::Status Append(std::string_view data) = 0;
  // Flushes the contents to stable storage (fsync).
  virtual absl::Status Sync() = 0;
  virtual absl::Status Close() = 0;
};

class FileEnv {
 public:
  virtual ~FileEnv() = default;

  // The real POSIX file system. Process-wide, stateless, never destroyed.
  static FileEnv* Default();

  // Creates `path`, which must not exist (O_EXCL), mode 0600.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) = 0;
  // The whole file; NOT_FOUND if absent, RESOURCE_EXHAUSTED if larger than max_bytes (checked before
  // reading).
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) = 0;
  // rename(2): atomically replaces `to`.
  virtual absl::Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual absl::Status RemoveFile(const std::string& path) = 0;
  // fsync of the directory, making renames and unlinks in it durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;
  // Names (not paths) of the entries in `dir`, without "." and "..".
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  // mkdir -p.
  virtual absl::Status CreateDirs(const std::string& dir) = 0;
};

}  // namespace brt::persistence

#endif  // BRT_SERVER_PERSISTENCE_FILE_ENV_H_
