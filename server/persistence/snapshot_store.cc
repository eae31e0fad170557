#include "server/persistence/snapshot_store.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/persistence/absl_compat.h"
#include "server/persistence/file_snapshot_store.h"
#include "server/persistence/redis_snapshot_store.h"

namespace brt::persistence {
namespace {

thread_local std::chrono::steady_clock::time_point current_store_deadline =
    std::chrono::steady_clock::time_point::max();

}  // namespace

ScopedStoreDeadline::ScopedStoreDeadline(std::chrono::steady_clock::time_point deadline)
    : previous_(current_store_deadline) {
  current_store_deadline = deadline;
}

ScopedStoreDeadline::~ScopedStoreDeadline() { current_store_deadline = previous_; }

std::chrono::steady_clock::time_point ScopedStoreDeadline::Current() { return current_store_deadline; }

absl::Status ValidateSnapshotKey(std::string_view key) {
  constexpr size_t kMaxKey = 128;
  if (key.empty() || key.size() > kMaxKey) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot key must be 1 to ", kMaxKey,
                                                   " characters, got ", key.size()));
  }
  for (size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot key may contain only letters, digits, '_' and '-'; byte ", i, " is 0x",
                       absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SnapshotStore>> CreateSnapshotStore(std::string_view uri_in,
                                                                   const StoreOptions& options) {
  const absl::string_view uri = AsAbsl(uri_in);
  if (absl::StartsWith(uri, "redis://")) {
    RedisStoreConfig config;
    config.connect_timeout_ms = options.redis_connect_timeout_ms;
    config.command_timeout_ms = options.redis_command_timeout_ms;
    config.max_value_bytes = options.max_value_bytes;
    if (absl::Status s = ParseRedisUri(uri_in, &config); !s.ok()) return s;
    auto store = RedisSnapshotStore::Create(config);
    if (!store.ok()) return store.status();
    return std::unique_ptr<SnapshotStore>(std::move(*store));
  }
  absl::string_view dir = uri;
  if (absl::StartsWith(uri, "file://")) {
    dir = uri.substr(7);
    if (!absl::StartsWith(dir, "/")) {
      return absl::InvalidArgumentError(absl::StrCat("bad file store URI '", uri,
                                                     "': expected file:///absolute/path (three slashes)"));
    }
  } else if (size_t colon = uri.find("://"); colon != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("unknown snapshot store scheme in '", uri,
                                                   "'; use file:///dir, a plain directory path, or redis://..."));
  }
  if (dir.empty()) return absl::InvalidArgumentError("empty snapshot store location");
  auto store = FileSnapshotStore::Create(std::string(dir), options);
  if (!store.ok()) return store.status();
  return std::unique_ptr<SnapshotStore>(std::move(*store));
}

}  // namespace brt::persistence
