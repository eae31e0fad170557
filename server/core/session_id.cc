#include "server/core/session_id.h"

#include <fstream>
#include <random>

namespace brt {

std::string NewSessionId() {
  unsigned char bytes[16];
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  if (!urandom.read(reinterpret_cast<char*>(bytes), sizeof(bytes))) {
    std::random_device rd;  // glibc: getrandom()/rdrand, also a CSPRNG
    for (unsigned char& b : bytes) b = static_cast<unsigned char>(rd());
  }
  static const char kHex[] = "0123456789abcdef";
  std::string id = "s_";
  for (unsigned char b : bytes) {
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 15]);
  }
  return id;
}

bool LooksLikeSessionId(const std::string& id) {
  if (id.size() != 34 || id.compare(0, 2, "s_") != 0) return false;
  for (size_t i = 2; i < id.size(); ++i) {
    char c = id[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace brt
