// SHA-256 of files and byte strings (OpenSSL libcrypto), as lowercase hex.
#ifndef BRT_SERVER_TOKENIZER_SHA256_H_
#define BRT_SERVER_TOKENIZER_SHA256_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace brt {

std::string Sha256Hex(std::string_view bytes);
// NOT_FOUND if the file cannot be opened.
absl::StatusOr<std::string> Sha256HexOfFile(const std::string& path);

}  // namespace brt

#endif  // BRT_SERVER_TOKENIZER_SHA256_H_
