// SHA-256 and HMAC-SHA256 over byte ranges (OpenSSL libcrypto), and a constant-time comparison.
// Pure functions; safe to call concurrently.
#ifndef BRT_SERVER_PERSISTENCE_DIGEST_H_
#define BRT_SERVER_PERSISTENCE_DIGEST_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace brt::persistence {

using Digest = std::array<uint8_t, 32>;

Digest Sha256(std::string_view data);
Digest HmacSha256(std::string_view key, std::string_view data);
// True if the 32 bytes at `a` equal `b`, in time independent of where they differ.
bool DigestEquals(const char* a, const Digest& b);
// Lower-case hex of a digest.
std::string DigestHex(const Digest& digest);

}  // namespace brt::persistence

#endif  // BRT_SERVER_PERSISTENCE_DIGEST_H_
