// libFuzzer target for Tokenizer::EncodeWithSpans / Encode / Decode and IncrementalTokenizer (server/tokenizer),
// with the tiny test tokenizer (tests/data/tiny/tokenizer.model) behind the real, uninstrumented shim.
//
// Input layout:
//   byte 0: bits 0-1 pick IncrementalTokenizer's max_line_bytes: the default (1 MiB), 64, 8 or 1;
//   byte 1: k = byte % 8, the number of chunk-size bytes that follow;
//   bytes 2 .. 2+k: chunk sizes (0..255, used in turn, over and over; k = 0 sends the text as one chunk);
//   the rest: the text (any bytes).
//
// What it checks, each a promise of the headers (tokenizer.h, incremental_tokenizer.h):
// - Encode/EncodeWithSpans succeed on any bytes; ids are in range; the spans tile [base, base + size) in
//   order, each as long as its piece's bytes; the pieces' bytes concatenate to the text (lossless) and
//   Decode(Encode(text)) == text; Encode gives EncodeWithSpans' ids.
// - IncrementalTokenizer: a chunk is refused only with RESOURCE_EXHAUSTED and only when more than
//   max_line_bytes bytes would wait for a newline, and a refusal changes nothing; never more than
//   max_line_bytes bytes wait; the tokens of all Append calls and Finish are exactly (ids and spans) those of
//   EncodeWithSpans over the accepted chunks at once, and bytes_received() counts the accepted bytes.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/tokenizer/incremental_tokenizer.h"
#include "server/tokenizer/tokenizer.h"

namespace {

using brt::IncrementalTokenizer;
using brt::Tokenizer;
using brt::TokenSpan;

[[noreturn]] void Fail(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "tokenizer_fuzzer: %s %s\n", what, detail.c_str());
  std::abort();
}

const Tokenizer& Tok() {
  static const Tokenizer* tok = [] {
    auto t = Tokenizer::Create(BRT_FUZZ_TOKENIZER_MODEL, BRT_SPM_SHIM_PATH);
    if (!t.ok()) Fail("cannot load the tokenizer:", t.status().ToString());
    return t->release();  // lives for the whole process
  }();
  return *tok;
}

void CheckWhole(const Tokenizer& tok, std::string_view text, uint64_t base,
                const std::vector<TokenSpan>& spans) {
  uint64_t pos = base;
  std::string bytes;
  for (const TokenSpan& t : spans) {
    if (t.id < 0 || t.id >= tok.vocab_size()) Fail("id out of range:", std::to_string(t.id));
    if (t.begin != pos) Fail("spans do not tile the text at", std::to_string(pos));
    const std::string& piece = tok.PieceBytes(t.id);
    if (t.end - t.begin != piece.size()) Fail("span length is not the piece's length at", std::to_string(pos));
    bytes += piece;
    pos = t.end;
  }
  if (pos != base + text.size()) Fail("spans end before the text does");
  if (bytes != text) Fail("not lossless: the pieces do not concatenate to the text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static constexpr uint64_t kLimits[] = {IncrementalTokenizer::kDefaultMaxLineBytes, 64, 8, 1};
  const uint64_t max_line = kLimits[data[0] & 3];
  const size_t k = data[1] % 8;
  if (size < 2 + k) return 0;
  const uint8_t* sizes = data + 2;
  const std::string_view text(reinterpret_cast<const char*>(data) + 2 + k, size - 2 - k);
  const Tokenizer& tok = Tok();

  // The whole text at once (with a base offset, which only shifts the spans).
  const uint64_t base = data[0] >> 2;
  auto whole = tok.EncodeWithSpans(text, base);
  if (!whole.ok()) Fail("EncodeWithSpans failed:", whole.status().ToString());
  CheckWhole(tok, text, base, *whole);
  auto ids = tok.Encode(text);
  if (!ids.ok()) Fail("Encode failed:", ids.status().ToString());
  if (ids->size() != whole->size()) Fail("Encode and EncodeWithSpans disagree on the count");
  for (size_t i = 0; i < ids->size(); ++i) {
    if ((*ids)[i] != (*whole)[i].id) Fail("Encode and EncodeWithSpans disagree at", std::to_string(i));
  }
  if (tok.Decode(*ids) != text) Fail("Decode(Encode(text)) != text");

  // The same bytes in chunks.
  IncrementalTokenizer inc(&tok, max_line);
  std::string accepted;
  std::vector<TokenSpan> got;
  size_t pos = 0;
  for (size_t c = 0; pos < text.size(); ++c) {
    if (c > 4 * text.size() + 16) break;  // all-zero sizes: stop sending empty chunks
    const size_t n = k == 0 ? text.size() : std::min<size_t>(sizes[c % k], text.size() - pos);
    const std::string_view chunk = text.substr(pos, n);
    pos += n;
    const size_t newline = chunk.rfind('\n');
    const uint64_t waiting = newline == std::string_view::npos ? inc.buffered_bytes() + chunk.size()
                                                                : chunk.size() - newline - 1;
    const size_t buffered_before = inc.buffered_bytes();
    auto part = inc.Append(chunk);
    if (!part.ok()) {
      if (part.status().code() != absl::StatusCode::kResourceExhausted) {
        Fail("Append failed:", part.status().ToString());
      }
      if (waiting <= max_line) Fail("Append refused a chunk within max_line_bytes:", part.status().ToString());
      if (inc.buffered_bytes() != buffered_before) Fail("a refused chunk changed the buffer");
      continue;
    }
    if (waiting > max_line) Fail("Append accepted a chunk over max_line_bytes");
    accepted.append(chunk);
    got.insert(got.end(), part->begin(), part->end());
    if (inc.buffered_bytes() > max_line) Fail("more than max_line_bytes bytes wait");
    if (inc.bytes_received() != accepted.size()) Fail("bytes_received() is not the accepted bytes");
  }
  auto rest = inc.Finish();
  if (!rest.ok()) Fail("Finish failed:", rest.status().ToString());
  got.insert(got.end(), rest->begin(), rest->end());
  if (inc.buffered_bytes() != 0) Fail("bytes wait after Finish");

  auto expect = tok.EncodeWithSpans(accepted);
  if (!expect.ok()) Fail("EncodeWithSpans failed:", expect.status().ToString());
  if (got.size() != expect->size()) {
    Fail("incremental tokens differ from whole-text tokens in count:",
         std::to_string(got.size()) + " vs " + std::to_string(expect->size()));
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const TokenSpan& a = got[i];
    const TokenSpan& b = (*expect)[i];
    if (a.id != b.id || a.begin != b.begin || a.end != b.end) {
      Fail("incremental tokens differ from whole-text tokens at", std::to_string(i));
    }
  }
  return 0;
}
