#include "server/persistence/digest.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <cstdlib>

namespace brt::persistence {

Digest Sha256(std::string_view data) {
  Digest out;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data());
  return out;
}

Digest HmacSha256(std::string_view key, std::string_view data) {
  Digest out;
  unsigned int len = 0;
  // A key longer than INT_MAX is impossible in practice; HMAC hashes long keys down anyway.
  const unsigned char* result =
      HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len);
  if (result == nullptr || len != out.size()) std::abort();  // only on OpenSSL misconfiguration
  return out;
}

bool DigestEquals(const char* a, const Digest& b) {
  return CRYPTO_memcmp(a, b.data(), b.size()) == 0;
}

std::string DigestHex(const Digest& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(digest.size() * 2);
  for (uint8_t byte : digest) {
    out.push_back(kHex[byte >> 4]);
    out.push_back(kHex[byte & 15]);
  }
  return out;
}

}  // namespace brt::persistence
