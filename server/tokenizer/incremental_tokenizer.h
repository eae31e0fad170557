// IncrementalTokenizer: tokenizes a byte stream that arrives in chunks split anywhere (even inside
// a UTF-8 sequence) and gives exactly the tokens of tokenizing the whole stream at once.
//
// Rule: the tokenizer model has '\n' as a user-defined symbol and BPE never merges across it, so
// the text up to and including the buffer's last newline can be committed and tokenized on its own.
// Bytes after the last newline wait for more input or Finish(). Token spans are offsets in the
// whole stream.
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
  explicit IncrementalTokenizer(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}

  // Adds a chunk; returns the tokens committed by it (possibly none).
  // REQUIRES: Finish() not called yet.
  absl::StatusOr<std::vector<TokenSpan>> Append(std::string_view chunk);
  // Tokenizes the rest of the buffer (the end of the stream).
  absl::StatusOr<std::vector<TokenSpan>> Finish();

  // Bytes received so far, and bytes waiting for a newline or Finish().
  uint64_t bytes_received() const { return buffer_offset_ + buffer_.size(); }
  size_t buffered_bytes() const { return buffer_.size(); }

 private:
  const Tokenizer* tokenizer_;
  std::string buffer_;          // uncommitted bytes
  uint64_t buffer_offset_ = 0;  // stream offset of buffer_[0]
};

}  // namespace brt

#endif  // BRT_SERVER_TOKENIZER_INCREMENTAL_TOKENIZER_H_
