// IncrementalTokenizer: tokenizes a byte stream that arrives in chunks split anywhere (even inside
// a UTF-8 sequence) and gives exactly the tokens of tokenizing the whole stream at once.
//
// Rule: the tokenizer model has '\n' as a user-defined symbol and BPE never merges across it, so
// the text up to and including the buffer's last newline can be committed and tokenized on its own.
// Bytes after the last newline wait for more input or Finish(). Token spans are offsets in the
// whole stream.
//
// Bound: at most max_line_bytes bytes may wait for a newline. A chunk that would make the text since
// the last newline longer than that is refused with RESOURCE_EXHAUSTED (nothing of it is kept), so
// a stream without newlines cannot make the buffer, or the one tokenization of it at the next
// newline, grow without limit. Lines that arrive whole inside one chunk are never buffered and are
// bounded by the caller's chunk limit instead.
//
// Thread safety: not thread-safe; one owner (a Score call) drives it. The Tokenizer must outlive
// it.
#ifndef BRT_SERVER_TOKENIZER_INCREMENTAL_TOKENIZER_H_
#define BRT_SERVER_TOKENIZER_INCREMENTAL_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/tokenizer.h"

namespace brt {

class IncrementalTokenizer {
 public:
  // The server's default for max_line_bytes (its --max_line_bytes flag).
  static constexpr uint64_t kDefaultMaxLineBytes = uint64_t{1} << 20;

  // REQUIRES: max_line_bytes > 0.
  explicit IncrementalTokenizer(const Tokenizer* tokenizer,
                                uint64_t max_line_bytes = kDefaultMaxLineBytes)
      : tokenizer_(tokenizer), max_line_bytes_(max_line_bytes) {}

  // Adds a chunk; returns the tokens committed by it (possibly none). RESOURCE_EXHAUSTED (and
  // nothing changes) when more than max_line_bytes bytes would wait for a newline.
  // REQUIRES: Finish() not called yet.
  absl::StatusOr<std::vector<TokenSpan>> Append(std::string_view chunk);
  // Tokenizes the rest of the buffer (the end of the stream).
  absl::StatusOr<std::vector<TokenSpan>> Finish();

  // Bytes received so far, and bytes waiting for a newline or Finish().
  uint64_t bytes_received() const { return buffer_offset_ + buffer_.size(); }
  size_t buffered_bytes() const { return buffer_.size(); }
  uint64_t max_line_bytes() const { return max_line_bytes_; }

 private:
  absl::Status LineTooLong(uint64_t waiting) const;

  const Tokenizer* tokenizer_;
  const uint64_t max_line_bytes_;
  std::string buffer_;          // uncommitted bytes (never more than max_line_bytes_)
  uint64_t buffer_offset_ = 0;  // stream offset of buffer_[0]
};

}  // namespace brt

#endif  // BRT_SERVER_TOKENIZER_INCREMENTAL_TOKENIZER_H_
