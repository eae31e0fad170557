#include "client/core/text.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace brt::client {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 if there is none.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  size_t n;
  uint32_t min;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  uint32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

std::string ToValidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const size_t n = Utf8SequenceLength(bytes, i);
    if (n == 0) {
      out += kReplacement;
      ++i;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string EscapeTsvField(std::string_view bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    const size_t n = Utf8SequenceLength(bytes, i);
    const char c = bytes[i];
    if (n == 0) {
      absl::StrAppend(&out, absl::StrFormat("\\x%02x", static_cast<uint8_t>(c)));
      ++i;
      continue;
    }
    if (n == 1) {
      switch (c) {
        case '\\':
          out += "\\\\";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        default:
          if (static_cast<uint8_t>(c) < 0x20 || c == 0x7F) {
            absl::StrAppend(&out, absl::StrFormat("\\x%02x", static_cast<uint8_t>(c)));
          } else {
            out += c;
          }
      }
    } else {
      out.append(bytes.substr(i, n));
    }
    i += n;
  }
  return out;
}

absl::StatusOr<std::string> UnescapeTsvField(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '\\') {
      out += field[i];
      continue;
    }
    if (i + 1 >= field.size()) return absl::InvalidArgumentError("TSV field ends with a lone '\\'");
    const char e = field[++i];
    switch (e) {
      case '\\':
        out += '\\';
        break;
      case 't':
        out += '\t';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 'x': {
        if (i + 2 >= field.size()) {
          return absl::InvalidArgumentError("TSV field has a truncated \\x escape");
        }
        int v = 0;
        for (int k = 1; k <= 2; ++k) {
          const char h = field[i + k];
          v <<= 4;
          if (h >= '0' && h <= '9')
            v |= h - '0';
          else if (h >= 'a' && h <= 'f')
            v |= h - 'a' + 10;
          else if (h >= 'A' && h <= 'F')
            v |= h - 'A' + 10;
          else
            return absl::InvalidArgumentError("TSV field has a bad \\x escape");
        }
        out += static_cast<char>(v);
        i += 2;
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("TSV field has an unknown escape \\", std::string(1, e)));
    }
  }
  return out;
}

std::string ForTerminal(std::string_view bytes) {
  std::string out;
  const std::string valid = ToValidUtf8(bytes);
  for (const char c : valid) {
    if (c == '\n') {
      out += "\xE2\x8F\x8E";  // ⏎
    } else if (c == '\t') {
      out += "\xE2\x86\x92";  // →
    } else if (static_cast<uint8_t>(c) < 0x20 || c == 0x7F) {
      continue;
    } else {
      out += c;
    }
  }
  return out;
}

size_t Utf8BoundaryForward(std::string_view s, size_t pos) {
  while (pos < s.size() && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) ++pos;
  return pos;
}

size_t Utf8BoundaryBackward(std::string_view s, size_t pos) {
  if (pos > s.size()) pos = s.size();
  while (pos > 0 && pos < s.size() && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

}  // namespace brt::client
