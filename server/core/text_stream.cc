#include "server/core/text_stream.h"

#include <algorithm>

#include "server/tokenizer/tokenizer.h"

namespace brt {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";

// True if t (1..3 bytes) is a proper prefix of some valid UTF-8 sequence.
bool IsIncompleteUtf8(std::string_view t) {
  unsigned char c = static_cast<unsigned char>(t[0]);
  size_t need = (c >= 0xC2 && c <= 0xDF)   ? 2
                : (c >= 0xE0 && c <= 0xEF) ? 3
                : (c >= 0xF0 && c <= 0xF4) ? 4
                                           : 0;
  if (need == 0 || t.size() >= need) return false;
  for (size_t i = 1; i < t.size(); ++i) {
    unsigned char b = static_cast<unsigned char>(t[i]);
    unsigned char lo = 0x80, hi = 0xBF;
    if (i == 1) {
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (b < lo || b > hi) return false;
  }
  return true;
}

// Length of a trailing run of s that is an incomplete UTF-8 sequence (could still complete), or 0.
size_t IncompleteUtf8Tail(std::string_view s) {
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: the lead is further back
    return IsIncompleteUtf8(s.substr(s.size() - back)) ? back : 0;
  }
  return 0;
}

}  // namespace

std::string SanitizeUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t n = Utf8SequenceLength(bytes.substr(i));
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

std::string TextStream::Push(std::string_view bytes) {
  if (stopped_) return "";
  held_.append(bytes);
  // A complete stop sequence: emit what precedes the earliest one.
  size_t earliest = std::string::npos;
  for (const std::string& stop : stops_) {
    size_t at = held_.find(stop);
    if (at < earliest) earliest = at;
  }
  if (earliest != std::string::npos) {
    stopped_ = true;
    std::string out = SanitizeUtf8(std::string_view(held_).substr(0, earliest));
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of a stop sequence.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t len = std::min(stop.size() - 1, held_.size()); len > hold; --len) {
      if (held_.compare(held_.size() - len, len, stop, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  size_t cut = held_.size() - hold;
  // And an incomplete UTF-8 sequence just before the cut.
  cut -= IncompleteUtf8Tail(std::string_view(held_).substr(0, cut));
  std::string out = SanitizeUtf8(std::string_view(held_).substr(0, cut));
  held_.erase(0, cut);
  return out;
}

std::string TextStream::Flush() {
  std::string out = SanitizeUtf8(held_);
  held_.clear();
  return out;
}

}  // namespace brt
