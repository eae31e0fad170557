// FileSnapshotStore: snapshots as files in one local directory, `<key>.snap`.
//
// Put is atomic and durable: write `.tmp-<key>-<pid>-<n>` in the same directory, fsync it, rename it over
// `<key>.snap`, fsync the directory. A crash at any point leaves either the old file or the new one, never
// a partial `<key>.snap`; at worst a temporary file, which Get and List never see (its name starts with '.',
// never a valid key) and Create removes (StoreOptions::clean_temp_files). File names are built only from
// keys that passed ValidateSnapshotKey.
// Thread safety: safe for concurrent use; concurrent Puts of one key each land whole, the last rename wins.
#ifndef BRT_SERVER_PERSISTENCE_FILE_SNAPSHOT_STORE_H_
#define BRT_SERVER_PERSISTENCE_FILE_SNAPSHOT_STORE_H_

#include <atomic>
#include <memory>
#include <string>

#include "server/persistence/file_env.h"
#include "server/persistence/snapshot_store.h"

namespace brt::persistence {

class FileSnapshotStore : public SnapshotStore {
 public:
  // Creates `dir` if needed and, if options.clean_temp_files, removes leftover temporary files.
  static absl::StatusOr<std::unique_ptr<FileSnapshotStore>> Create(std::string dir, const StoreOptions& options);

  absl::Status Put(std::string_view key, std::string_view bytes) override;
  absl::StatusOr<std::string> Get(std::string_view key) override;
  absl::Status Delete(std::string_view key) override;
  absl::StatusOr<std::vector<std::string>> List() override;
  std::string Describe() const override;

  // Prefix of temporary file names (exposed for tests).
  static constexpr std::string_view kTempPrefix = ".tmp-";
  static constexpr std::string_view kSuffix = ".snap";

 private:
  FileSnapshotStore(std::string dir, FileEnv* env, const StoreOptions& options);
  std::string PathFor(std::string_view key) const;

  const std::string dir_;
  FileEnv* const env_;
  const uint64_t max_value_bytes_;
  const bool durable_;
  std::atomic<uint64_t> temp_counter_{0};
};

}  // namespace brt::persistence

#endif  // BRT_SERVER_PERSISTENCE_FILE_SNAPSHOT_STORE_H_
