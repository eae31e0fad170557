// TextStream: turns generated token bytes into text deltas that are always whole UTF-8, holding
// back an incomplete UTF-8 sequence and any tail that could be the start of a stop sequence, and
// detecting stop sequences (whose text is never emitted).
//
// Thread safety: not thread-safe; one per generation request.
#ifndef BRT_SERVER_CORE_TEXT_STREAM_H_
#define BRT_SERVER_CORE_TEXT_STREAM_H_

#include <string>
#include <string_view>
#include <vector>

namespace brt {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds a token's bytes; returns the text that can be emitted now. After a stop sequence is seen,
  // stopped() is true and the returned text is everything before it.
  std::string Push(std::string_view bytes);
  // Returns all held-back text (end of generation); an incomplete sequence becomes U+FFFD.
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

// Bytes to valid UTF-8: each byte not part of a valid sequence becomes U+FFFD.
std::string SanitizeUtf8(std::string_view bytes);

}  // namespace brt

#endif  // BRT_SERVER_CORE_TEXT_STREAM_H_
