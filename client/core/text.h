// Byte-string helpers for showing and storing token text. Tokens carry raw bytes (the API's
// `piece`), which need not be valid UTF-8; these functions make them safe for JSON, TSV and
// terminals. Pure functions; thread-safe.
#ifndef BRT_CLIENT_CORE_TEXT_H_
#define BRT_CLIENT_CORE_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace brt::client {

// Valid UTF-8: each byte that is not part of a well-formed sequence becomes U+FFFD.
std::string ToValidUtf8(std::string_view bytes);

// One TSV field: backslash, tab, newline and carriage return as \\ \t \n \r; other control bytes
// and bytes of invalid UTF-8 as \xHH. Lossless: UnescapeTsvField() gives the bytes back.
std::string EscapeTsvField(std::string_view bytes);
absl::StatusOr<std::string> UnescapeTsvField(std::string_view field);

// For one line on a terminal: newline as "⏎", tab as "→", other control bytes dropped, invalid
// UTF-8 as U+FFFD.
std::string ForTerminal(std::string_view bytes);

// Moves `pos` forward (or backward) to the nearest byte in `s` that does not continue a UTF-8
// sequence, so slices of valid text stay valid.
size_t Utf8BoundaryForward(std::string_view s, size_t pos);
size_t Utf8BoundaryBackward(std::string_view s, size_t pos);

}  // namespace brt::client

#endif  // BRT_CLIENT_CORE_TEXT_H_
