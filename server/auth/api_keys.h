// ApiKeys: the parsed --api_keys_file. One key per line:
//
//   TENANT SHA256_HEX_OF_KEY [max_sessions=N] [max_calls=N]   # a comment
//
// TENANT names who the key acts for (tenant.h: [A-Za-z0-9_], 1..48), the digest is the lowercase or
// uppercase hex SHA-256 of the key a client sends as `authorization: Bearer KEY` (the server never
// holds a key itself), and the optional quotas override --tenant_max_sessions / --tenant_max_calls for
// that tenant (0 = none). Blank lines and text after '#' are ignored. A tenant may have several keys
// (rotation: add the new key, reload, retire the old one); its quotas must then agree.
//
// Thread safety: an immutable value once parsed.
#ifndef BRT_SERVER_AUTH_API_KEYS_H_
#define BRT_SERVER_AUTH_API_KEYS_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace brt::auth {

struct ApiKeyEntry {
  std::string tenant;
  std::array<unsigned char, 32> digest{};  // SHA-256 of the key
  std::optional<uint32_t> max_sessions;
  std::optional<uint32_t> max_calls;
};

class ApiKeys {
 public:
  // INVALID_ARGUMENT naming the line and what is wrong with it.
  static absl::StatusOr<ApiKeys> Parse(std::string_view text);
  // Parse of the file's contents; NOT_FOUND / PERMISSION_DENIED when it cannot be read.
  static absl::StatusOr<ApiKeys> Load(const std::string& path);

  // The entry whose digest is SHA-256(key), compared in constant time against every entry (the time
  // does not depend on which entry matches, or how much of a digest does); nullptr if none.
  const ApiKeyEntry* Match(std::string_view key) const;
  // The entry of `tenant` with quotas (the first one), or nullptr.
  const ApiKeyEntry* FindTenant(std::string_view tenant) const;
  const std::vector<ApiKeyEntry>& entries() const { return entries_; }

 private:
  std::vector<ApiKeyEntry> entries_;
};

}  // namespace brt::auth

#endif  // BRT_SERVER_AUTH_API_KEYS_H_
