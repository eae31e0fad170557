#include "server/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "server/tokenizer/incremental_tokenizer.h"
#include "server/tokenizer/sanitizer_build.h"
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
  std::string text = "a\xE2\x96\x81" "b \xE2\x96\x81\xE2\x96\x81 c\n";
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

// The splitting EncodeWithSpans did before it was made linear (it rescanned the rest of the text for
// valid UTF-8 at every marker): valid marker-free runs go to SentencePiece, each marker and each
// invalid byte becomes byte tokens. The runs themselves are encoded by the tokenizer under test.
std::vector<TokenSpan> OldEncodeWithSpans(const Tokenizer& tok, std::string_view text) {
  static constexpr std::string_view kMarker = "\xE2\x96\x81";
  std::vector<TokenSpan> out;
  auto byte_token = [&](size_t i) {
    char piece[8];
    std::snprintf(piece, sizeof(piece), "<0x%02X>", static_cast<unsigned char>(text[i]));
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      if (tok.PieceString(id) == piece) return TokenSpan{id, i, i + 1};
    }
    return TokenSpan{-1, i, i + 1};
  };
  size_t i = 0;
  while (i < text.size()) {
    if (text.compare(i, kMarker.size(), kMarker) == 0) {
      for (size_t k = 0; k < kMarker.size(); ++k, ++i) out.push_back(byte_token(i));
      continue;
    }
    size_t valid = ValidUtf8PrefixLength(text.substr(i));
    size_t marker = text.substr(i, valid).find(kMarker);
    if (marker != std::string_view::npos) valid = marker;
    if (valid > 0) {
      auto run = tok.EncodeWithSpans(text.substr(i, valid), i);  // a valid run without markers
      EXPECT_TRUE(run.ok());
      out.insert(out.end(), run->begin(), run->end());
      i += valid;
    } else {
      out.push_back(byte_token(i));
      ++i;
    }
  }
  return out;
}

TEST(TokenizerTest, LinearSplittingMatchesTheOldSplittingOnMixedText) {
  auto tok = TinyTokenizer();
  const std::vector<std::string> parts = {
      "a", "the ", " ", "\xE2\x96\x81", "\xE2\x96\x81\xE2\x96\x81", "\xFF", "\xC3", "\xC3\xA9",
      "\xE6\x97\xA5\xE6\x9C\xAC", "\xE2\x96", "\xE2\x96\x82", "\xF0\x9F\x98\x80", "\xED\xA0\x80",
      "\n", "words and more words", "\t", "12345", "\xC0\x80"};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    int n = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) text += parts[rng() % parts.size()];
    auto got = tok->EncodeWithSpans(text);
    ASSERT_TRUE(got.ok()) << got.status();
    std::vector<TokenSpan> want = OldEncodeWithSpans(*tok, text);
    ASSERT_EQ(got->size(), want.size()) << "trial " << trial;
    for (size_t k = 0; k < want.size(); ++k) {
      EXPECT_EQ((*got)[k].id, want[k].id) << "trial " << trial << " token " << k;
      EXPECT_EQ((*got)[k].begin, want[k].begin);
      EXPECT_EQ((*got)[k].end, want[k].end);
    }
    EXPECT_EQ(Concat(*tok, *got), text);
  }
}

// Sanitizer builds (tests/checks/run.sh: ASan + UBSan at -O0) run this code about 10x slower.
constexpr double kSlowdown = kAddressSanitizerBuild ? 10 : 1;

TEST(TokenizerTest, AdversarialMarkerTextTokenizesInLinearTime) {
  auto tok = TinyTokenizer();
  // "a" + U+2581 pairs: the old splitting rescanned the rest of the text at every marker (about 50 s
  // of CPU for 256 KiB); one pass takes milliseconds. 2 s is a generous bound for a slow machine (20 s
  // under a sanitizer, still well below the quadratic 50 s).
  std::string text;
  while (text.size() < (256u << 10)) text += "a\xE2\x96\x81";
  const auto t0 = std::chrono::steady_clock::now();
  auto spans = tok->EncodeWithSpans(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(spans.ok()) << spans.status();
  EXPECT_LT(seconds, 2.0 * kSlowdown);
  EXPECT_EQ(spans->size(), text.size());  // "a" is one token, the marker three byte tokens
  EXPECT_EQ(Concat(*tok, *spans), text);
  EXPECT_EQ(spans->back().end, text.size());
}

TEST(IncrementalTokenizerTest, RefusesMoreThanMaxLineBytesWithoutANewline) {
  auto tok = TinyTokenizer();
  IncrementalTokenizer inc(tok.get(), /*max_line_bytes=*/100);
  ASSERT_TRUE(inc.Append(std::string(60, 'a')).ok());
  ASSERT_TRUE(inc.Append(std::string(40, 'b')).ok());  // exactly 100 bytes wait: allowed
  auto over = inc.Append("c");
  EXPECT_THAT(over, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_NE(over.status().message().find("--max_line_bytes"), std::string::npos);
  EXPECT_NE(over.status().message().find("newline"), std::string::npos);
  EXPECT_EQ(inc.buffered_bytes(), 100u);  // the refused chunk was not kept
  // A newline commits the buffered line (which may then be longer than the bound by one chunk).
  auto committed = inc.Append("\nshort tail");
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_FALSE(committed->empty());
  EXPECT_EQ(inc.buffered_bytes(), 10u);
  // A chunk whose text after its last newline is over the bound is refused as well.
  EXPECT_THAT(inc.Append("x\n" + std::string(101, 'y')),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // Whole lines inside one chunk are not buffered, so they are not limited here.
  auto lines = inc.Append(std::string(500, 'z') + "\n");
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_EQ(inc.buffered_bytes(), 0u);
  EXPECT_EQ(inc.max_line_bytes(), 100u);
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
