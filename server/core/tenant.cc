#include "server/core/tenant.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/client_text.h"

namespace brt {

absl::Status ValidateTenantName(std::string_view name) {
  constexpr size_t kMaxLength = 48;
  if (name.empty() || name.size() > kMaxLength) {
    return absl::InvalidArgumentError(absl::StrCat("a tenant name must be 1..", kMaxLength,
                                                   " characters, got ", name.size()));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') {
      return absl::InvalidArgumentError(
          absl::StrCat("tenant name ", QuoteClientInput(name),
                       " may only hold letters, digits and '_'"));
    }
  }
  return absl::OkStatus();
}

std::string StoreKey(const Tenant& tenant, std::string_view key) {
  if (tenant.name.empty()) return std::string(key);
  return absl::StrCat(tenant.name, "-", absl::string_view(key.data(), key.size()));
}

std::optional<std::string> TenantKey(const Tenant& tenant, std::string_view store_key) {
  if (tenant.name.empty()) return std::string(store_key);
  const std::string prefix = absl::StrCat(tenant.name, "-");
  if (!absl::StartsWith(absl::string_view(store_key.data(), store_key.size()), prefix) || store_key.size() == prefix.size()) {
    return std::nullopt;
  }
  return std::string(store_key.substr(prefix.size()));
}

}  // namespace brt
