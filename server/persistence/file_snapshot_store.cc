#include "server/persistence/file_snapshot_store.h"

#include <unistd.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/persistence/absl_compat.h"

namespace brt::persistence {
namespace {

// Adds the store's context to an error from the env, keeping its code.
absl::Status Annotate(const absl::Status& s, absl::string_view what) {
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileSnapshotStore>> FileSnapshotStore::Create(std::string dir,
                                                                             const StoreOptions& options) {
  if (dir.empty()) return absl::InvalidArgumentError("file snapshot store: empty directory path");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  FileEnv* env = options.env != nullptr ? options.env : FileEnv::Default();
  if (absl::Status s = env->CreateDirs(dir); !s.ok()) {
    return Annotate(s, absl::StrCat("cannot create snapshot directory ", dir));
  }
  auto names = env->ListDir(dir);
  if (!names.ok()) return Annotate(names.status(), absl::StrCat("cannot list snapshot directory ", dir));
  if (options.clean_temp_files) {
    for (const std::string& name : *names) {
      if (!absl::StartsWith(name, AsAbsl(kTempPrefix))) continue;
      // A leftover from a writer that crashed before its rename; never a complete snapshot.
      if (absl::Status s = env->RemoveFile(absl::StrCat(dir, "/", name)); !s.ok() && !absl::IsNotFound(s)) {
        return Annotate(s, "cannot remove a leftover temporary snapshot file");
      }
    }
  }
  return std::unique_ptr<FileSnapshotStore>(new FileSnapshotStore(std::move(dir), env, options));
}

FileSnapshotStore::FileSnapshotStore(std::string dir, FileEnv* env, const StoreOptions& options)
    : dir_(std::move(dir)), env_(env), max_value_bytes_(options.max_value_bytes), durable_(options.durable) {}

std::string FileSnapshotStore::PathFor(std::string_view key_in) const {
  const absl::string_view key = AsAbsl(key_in);
  return absl::StrCat(dir_, "/", key, AsAbsl(kSuffix));
}

std::string FileSnapshotStore::Describe() const { return absl::StrCat("file://", dir_); }

absl::Status FileSnapshotStore::Put(std::string_view key_in, std::string_view bytes) {
  const absl::string_view key = AsAbsl(key_in);
  if (absl::Status s = ValidateSnapshotKey(key_in); !s.ok()) return s;
  if (bytes.size() > max_value_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("snapshot '", key, "' is ", bytes.size(),
                                                     " bytes, more than the store's limit of ", max_value_bytes_));
  }
  const std::string temp = absl::StrCat(dir_, "/", AsAbsl(kTempPrefix), key, "-", ::getpid(), "-",
                                        temp_counter_.fetch_add(1, std::memory_order_relaxed));
  const std::string what = absl::StrCat("saving snapshot '", key, "' in ", Describe());
  auto file = env_->NewWritableFile(temp);
  if (!file.ok()) return Annotate(file.status(), what);
  absl::Status s = (*file)->Append(bytes);
  if (s.ok() && durable_) s = (*file)->Sync();
  if (absl::Status c = (*file)->Close(); s.ok()) s = c;
  if (s.ok()) s = env_->RenameFile(temp, PathFor(key_in));
  if (!s.ok()) {
    env_->RemoveFile(temp).IgnoreError();  // best effort; Create removes it otherwise
    return Annotate(s, what);
  }
  // The rename is durable once the directory is synced. If this fails the new file is in place but may
  // not survive a power loss; report it so the caller does not count on it.
  if (durable_) {
    if (absl::Status d = env_->SyncDir(dir_); !d.ok()) return Annotate(d, what);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileSnapshotStore::Get(std::string_view key_in) {
  const absl::string_view key = AsAbsl(key_in);
  if (absl::Status s = ValidateSnapshotKey(key_in); !s.ok()) return s;
  auto bytes = env_->ReadFile(PathFor(key_in), max_value_bytes_);
  if (absl::IsNotFound(bytes.status())) {
    return absl::NotFoundError(absl::StrCat("no snapshot '", key, "' in ", Describe()));
  }
  if (!bytes.ok()) return Annotate(bytes.status(), absl::StrCat("reading snapshot '", key, "'"));
  return bytes;
}

absl::Status FileSnapshotStore::Delete(std::string_view key_in) {
  const absl::string_view key = AsAbsl(key_in);
  if (absl::Status s = ValidateSnapshotKey(key_in); !s.ok()) return s;
  absl::Status s = env_->RemoveFile(PathFor(key_in));
  if (absl::IsNotFound(s)) return absl::NotFoundError(absl::StrCat("no snapshot '", key, "' in ", Describe()));
  if (!s.ok()) return Annotate(s, absl::StrCat("deleting snapshot '", key, "'"));
  if (durable_) {
    if (absl::Status d = env_->SyncDir(dir_); !d.ok()) return Annotate(d, absl::StrCat("deleting snapshot '", key, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> FileSnapshotStore::List() {
  auto names = env_->ListDir(dir_);
  if (!names.ok()) return Annotate(names.status(), absl::StrCat("listing ", Describe()));
  std::vector<std::string> keys;
  for (const std::string& name : *names) {
    if (!absl::EndsWith(name, AsAbsl(kSuffix))) continue;
    absl::string_view key(name.data(), name.size() - kSuffix.size());
    if (ValidateSnapshotKey(std::string_view(key.data(), key.size())).ok()) keys.emplace_back(key);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace brt::persistence
