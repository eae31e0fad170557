#include "server/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <random>

#include "server/tokenizer/incremental_tokenizer.h"
#include "server/tokenizer/sha256.h"
#include "tests/cpp/testing/fake_backend.h"
#include "tests/cpp/testing/status_matchers.h"

namespace brt {
namespace {

using ::brt::testing::StatusIs;
using ::brt::testing::TinyDir;
using ::brt::testing::TinyTokenizer;

const char kText[] =
    "In the beginning God created the heaven and the earth.\n"
    "  Tabs\tand   repeated spaces, numbers 12345, punctuation!?\n"
    "Non-ASCII: na\xC3\xAFve caf\xC3\xA9, \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E, emoji "
    "\xF0\x9F\x98\x80.\n"
    "\n\nTrailing text without newline";

std::string Concat(const Tokenizer& tok, const std::vector<TokenSpan>& spans) {
  std::string out;
  for (const TokenSpan& t : spans) out += tok.PieceBytes(t.id);
  return out;
}

TEST(TokenizerTest, LoadsAndReportsSpecialIds) {
  auto tok = TinyTokenizer();
  EXPECT_EQ(tok->vocab_size(), 4096);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->PieceBytes(tok->bos_id()), "");
  EXPECT_EQ(tok->sha256().size(), 64u);
  EXPECT_EQ(tok->sha256(), *Sha256HexOfFile(TinyDir() + "/tokenizer.model"));
}

TEST(TokenizerTest, MissingFilesAreNotFound) {
  EXPECT_THAT(Tokenizer::Create("/nonexistent/tokenizer.model", testing::ShimPath()),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Tokenizer::Create(TinyDir() + "/tokenizer.model", "/nonexistent/shim.so"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(TokenizerTest, RoundTripIsLossless) {
  auto tok = TinyTokenizer();
  auto spans = tok->EncodeWithSpans(kText);
  ASSERT_TRUE(spans.ok()) << spans.status();
  EXPECT_EQ(Concat(*tok, *spans), kText);
  uint64_t pos = 0;
  for (const TokenSpan& t : *spans) {
    EXPECT_EQ(t.begin, pos);
    pos = t.end;
    EXPECT_EQ(t.end - t.begin, tok->PieceBytes(t.id).size());
  }
  EXPECT_EQ(pos, sizeof(kText) - 1);
}

TEST(TokenizerTest, InvalidUtf8BecomesByteTokens) {
  auto tok = TinyTokenizer();
  std::string text = "ab\xFF\xC3 cd\xE6\x97";  // stray byte, truncated 2-byte and 3-byte sequences
  auto ids = tok->Encode(text);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(tok->Decode(*ids), text);
  bool has_ff = false;
  for (int32_t id : *ids) has_ff = has_ff || tok->PieceString(id) == "<0xFF>";
  EXPECT_TRUE(has_ff);
}

TEST(TokenizerTest, LiteralSpaceMarkerSurvivesRoundTrip) {
  auto tok = TinyTokenizer();
  // U+2581 is SentencePiece's own space marker; it must come back as itself, not as a space.
  std::string text = "a\xE2\x96\x81b \xE2\x96\x81\xE2\x96\x81 c\n";
  auto spans = tok->EncodeWithSpans(text);
  ASSERT_TRUE(spans.ok()) << spans.status();
  EXPECT_EQ(Concat(*tok, *spans), text);
  EXPECT_EQ(tok->PieceString((*spans)[1].id), "<0xE2>");
}

TEST(TokenizerTest, NewlineSplitGivesSameTokens) {
  auto tok = TinyTokenizer();
  std::string a = "first line of text\n", b = "second line\n";
  auto whole = tok->Encode(a + b);
  auto pa = tok->Encode(a), pb = tok->Encode(b);
  std::vector<int32_t> joined = *pa;
  joined.insert(joined.end(), pb->begin(), pb->end());
  EXPECT_EQ(*whole, joined);
}

TEST(IncrementalTokenizerTest, ChunkedEqualsWholeOnRandomSplits) {
  auto tok = TinyTokenizer();
  std::string text;
  for (int i = 0; i < 6; ++i) text += kText;
  text += "\xFF\xFE broken \xE2\x82";  // invalid bytes at the very end, too
  auto whole = tok->EncodeWithSpans(text);
  ASSERT_TRUE(whole.ok());
  std::mt19937 rng(42);
  for (int trial = 0; trial < 50; ++trial) {
    IncrementalTokenizer inc(tok.get());
    std::vector<TokenSpan> got;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t n = std::min<size_t>(text.size() - pos, rng() % 40);
      auto part = inc.Append(std::string_view(text).substr(pos, n));
      ASSERT_TRUE(part.ok());
      got.insert(got.end(), part->begin(), part->end());
      pos += n;
    }
    auto rest = inc.Finish();
    ASSERT_TRUE(rest.ok());
    got.insert(got.end(), rest->begin(), rest->end());
    ASSERT_EQ(got.size(), whole->size()) << "trial " << trial;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].id, (*whole)[i].id);
      EXPECT_EQ(got[i].begin, (*whole)[i].begin);
      EXPECT_EQ(got[i].end, (*whole)[i].end);
    }
    EXPECT_EQ(inc.bytes_received(), text.size());
  }
}

TEST(Utf8Test, ValidPrefix) {
  EXPECT_EQ(ValidUtf8PrefixLength("abc"), 3u);
  EXPECT_EQ(ValidUtf8PrefixLength("a\xC3\xA9z"), 4u);
  EXPECT_EQ(ValidUtf8PrefixLength("a\xC3"), 1u);
  EXPECT_EQ(ValidUtf8PrefixLength("\xED\xA0\x80"), 0u);  // surrogate
  EXPECT_EQ(ValidUtf8PrefixLength("\xC0\x80"), 0u);      // overlong
}

}  // namespace
}  // namespace brt
