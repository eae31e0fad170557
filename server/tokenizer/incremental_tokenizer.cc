#include "server/tokenizer/incremental_tokenizer.h"

#include "absl/strings/str_cat.h"

namespace brt {

absl::Status IncrementalTokenizer::LineTooLong(uint64_t waiting) const {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the text since the last newline would reach ", waiting, " bytes; at most ",
      max_line_bytes_, " bytes may wait for a newline (--max_line_bytes). Send newlines (lines of at "
      "most ", max_line_bytes_, " bytes) or split the text into smaller lines"));
}

absl::StatusOr<std::vector<TokenSpan>> IncrementalTokenizer::Append(std::string_view chunk) {
  size_t newline = chunk.rfind('\n');
  if (newline == std::string_view::npos) {
    const uint64_t waiting = uint64_t{buffer_.size()} + chunk.size();
    if (waiting > max_line_bytes_) return LineTooLong(waiting);
    buffer_.append(chunk);
    return std::vector<TokenSpan>();
  }
  const std::string_view tail = chunk.substr(newline + 1);
  if (tail.size() > max_line_bytes_) return LineTooLong(tail.size());
  buffer_.append(chunk.substr(0, newline + 1));
  auto tokens = tokenizer_->EncodeWithSpans(buffer_, buffer_offset_);
  if (!tokens.ok()) return tokens.status();
  buffer_offset_ += buffer_.size();
  buffer_.assign(tail);
  return tokens;
}

absl::StatusOr<std::vector<TokenSpan>> IncrementalTokenizer::Finish() {
  auto tokens = tokenizer_->EncodeWithSpans(buffer_, buffer_offset_);
  if (!tokens.ok()) return tokens.status();
  buffer_offset_ += buffer_.size();
  buffer_.clear();
  return tokens;
}

}  // namespace brt
