#include "server/auth/authenticator.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/client_text.h"

namespace brt::auth {

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(AuthOptions options) {
  std::unique_ptr<Authenticator> a(new Authenticator(std::move(options)));
  if (a->options_.api_keys_file.empty()) {
    absl::MutexLock lock(&a->mu_);
    a->keys_ = std::make_shared<const ApiKeys>();
    return a;
  }
  auto loaded = a->Reload();
  if (!loaded.ok()) return loaded.status();
  return a;
}

absl::StatusOr<size_t> Authenticator::Reload() {
  if (options_.api_keys_file.empty()) return 0;
  auto keys = ApiKeys::Load(options_.api_keys_file);
  if (!keys.ok()) return keys.status();
  const size_t n = keys->entries().size();
  auto shared = std::make_shared<const ApiKeys>(*std::move(keys));
  absl::MutexLock lock(&mu_);
  keys_ = std::move(shared);
  return n;
}

Tenant Authenticator::WithQuotas(std::string name, const ApiKeys& keys) const {
  Tenant t;
  t.max_sessions = options_.default_max_sessions;
  t.max_calls = options_.default_max_calls;
  if (const ApiKeyEntry* e = keys.FindTenant(name)) {
    if (e->max_sessions) t.max_sessions = *e->max_sessions;
    if (e->max_calls) t.max_calls = *e->max_calls;
  }
  t.name = std::move(name);
  return t;
}

absl::StatusOr<Tenant> Authenticator::Resolve(
    std::optional<std::string_view> authorization,
    std::optional<std::string_view> certificate_name) const {
  std::shared_ptr<const ApiKeys> keys;
  {
    absl::MutexLock lock(&mu_);
    keys = keys_;
  }
  // Without a keys file an authorization header is ignored, as servers without keys conventionally do
  // (the openai SDKs always send one).
  if (authorization.has_value() && !options_.api_keys_file.empty()) {
    absl::string_view value(authorization->data(), authorization->size());
    value = absl::StripAsciiWhitespace(value);
    constexpr absl::string_view kBearer = "Bearer ";
    if (!absl::StartsWithIgnoreCase(value, kBearer)) {
      return absl::UnauthenticatedError(
          "the authorization header must be 'Bearer KEY' (an API key from the server's operator)");
    }
    const absl::string_view key = absl::StripAsciiWhitespace(value.substr(kBearer.size()));
    const ApiKeyEntry* e = keys->Match(std::string_view(key.data(), key.size()));
    if (e == nullptr) {
      return absl::UnauthenticatedError(
          "the API key is not valid (it matches no key in the server's keys file)");
    }
    return WithQuotas(e->tenant, *keys);
  }
  if (certificate_name.has_value() && options_.mtls) {
    absl::Status valid = ValidateTenantName(*certificate_name);
    if (!valid.ok()) {
      return absl::UnauthenticatedError(absl::StrCat(
          "the client certificate's common name does not name a tenant: ", valid.message()));
    }
    return WithQuotas(std::string(*certificate_name), *keys);
  }
  if (required()) {
    return absl::UnauthenticatedError(
        options_.mtls && options_.api_keys_file.empty()
            ? "a client certificate is required (mTLS)"
            : "an API key is required: send the metadata/header 'authorization: Bearer KEY'");
  }
  return Tenant{};
}

std::vector<std::string> Authenticator::tenant_names() const {
  std::shared_ptr<const ApiKeys> keys;
  {
    absl::MutexLock lock(&mu_);
    keys = keys_;
  }
  std::vector<std::string> names;
  for (const ApiKeyEntry& e : keys->entries()) {
    if (std::find(names.begin(), names.end(), e.tenant) == names.end()) names.push_back(e.tenant);
  }
  return names;
}

}  // namespace brt::auth
