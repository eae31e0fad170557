#include "server/tokenizer/incremental_tokenizer.h"

namespace brt {

absl::StatusOr<std::vector<TokenSpan>> IncrementalTokenizer::Append(std::string_view chunk) {
  size_t newline = chunk.rfind('\n');
  if (newline == std::string_view::npos) {
    buffer_.append(chunk);
    return std::vector<TokenSpan>();
  }
  buffer_.append(chunk.substr(0, newline + 1));
  auto tokens = tokenizer_->EncodeWithSpans(buffer_, buffer_offset_);
  if (!tokens.ok()) return tokens.status();
  buffer_offset_ += buffer_.size();
  buffer_.assign(chunk.substr(newline + 1));
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
