#include "server/core/client_text.h"

#include "absl/strings/str_cat.h"

namespace brt {

std::string_view Utf8Prefix(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  // Back off over continuation bytes (at most 3) to the start of the sequence that was cut.
  for (int k = 0; k < 3 && n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80; ++k) --n;
  return s.substr(0, n);
}

std::string QuoteClientInput(std::string_view input, size_t max_bytes) {
  if (input.size() <= max_bytes) return std::string(input);
  return absl::StrCat(std::string(Utf8Prefix(input, max_bytes)), "... (", input.size(), " bytes)");
}

std::string CapStatusMessage(std::string_view message) {
  std::string text(Utf8Prefix(message, kMaxStatusMessageBytes));
  if (text.size() < message.size()) text += "... (truncated)";
  return text;
}

}  // namespace brt
