#include "server/auth/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/core/tenant.h"

namespace brt::auth {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::Status LineError(size_t line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "api keys file, line ", line, ": ", what,
      " (expected 'TENANT SHA256_HEX_OF_KEY [max_sessions=N] [max_calls=N]')"));
}

}  // namespace

absl::StatusOr<ApiKeys> ApiKeys::Parse(std::string_view text) {
  ApiKeys keys;
  size_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    if (fields.size() < 2) return LineError(line_no, "a tenant and a key digest are required");
    ApiKeyEntry e;
    e.tenant = std::string(fields[0]);
    absl::Status name = ValidateTenantName(e.tenant);
    if (!name.ok()) return LineError(line_no, std::string(name.message()));
    const absl::string_view hex = fields[1];
    if (hex.size() != 64) {
      return LineError(line_no, absl::StrCat("the digest must be 64 hex digits (SHA-256), got ",
                                             hex.size(), " characters"));
    }
    for (size_t i = 0; i < 32; ++i) {
      const int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) return LineError(line_no, "the digest holds a non-hex character");
      e.digest[i] = static_cast<unsigned char>(hi * 16 + lo);
    }
    for (size_t i = 2; i < fields.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(fields[i], '=');
      uint32_t value = 0;
      if (!absl::SimpleAtoi(kv.second, &value)) {
        return LineError(line_no, absl::StrCat("'", fields[i], "' is not NAME=NUMBER"));
      }
      if (kv.first == "max_sessions") {
        e.max_sessions = value;
      } else if (kv.first == "max_calls") {
        e.max_calls = value;
      } else {
        return LineError(line_no, absl::StrCat("unknown option '", kv.first,
                                               "' (known: max_sessions, max_calls)"));
      }
    }
    for (const ApiKeyEntry& other : keys.entries_) {
      if (other.digest == e.digest) return LineError(line_no, "this digest is listed twice");
      if (other.tenant == e.tenant &&
          (other.max_sessions != e.max_sessions || other.max_calls != e.max_calls)) {
        return LineError(line_no, absl::StrCat("tenant ", e.tenant,
                                               " has other quotas on an earlier line"));
      }
    }
    keys.entries_.push_back(std::move(e));
  }
  return keys;
}

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read the api keys file ", path));
  }
  std::ostringstream text;
  text << in.rdbuf();
  auto keys = Parse(text.str());
  if (!keys.ok()) {
    return absl::Status(keys.status().code(), absl::StrCat(path, ": ", keys.status().message()));
  }
  return keys;
}

const ApiKeyEntry* ApiKeys::Match(std::string_view key) const {
  std::array<unsigned char, 32> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest.data());
  const ApiKeyEntry* found = nullptr;
  for (const ApiKeyEntry& e : entries_) {
    // Every entry is compared in full; the branch below does not depend on the digest bytes.
    const bool same = CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0;
    if (same) found = &e;
  }
  return found;
}

const ApiKeyEntry* ApiKeys::FindTenant(std::string_view tenant) const {
  for (const ApiKeyEntry& e : entries_) {
    if (e.tenant == tenant) return &e;
  }
  return nullptr;
}

}  // namespace brt::auth
