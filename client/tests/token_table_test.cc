#include "client/core/token_table.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

namespace brt::client {
namespace {

std::vector<TokenRow> Rows(bool with_reset) {
  std::vector<TokenRow> rows = {{1, 10, "Hello", 0, 5, 3.25f, std::nullopt},
                                {2, 11, "\t\n\xFF", 5, 8, 0.125f, std::nullopt},
                                {3, 12, "\xC3\xA9", 8, 10, 1.1f, std::nullopt}};
  if (with_reset) {
    for (TokenRow& r : rows) r.nll_reset = r.nll + 0.5;
  }
  return rows;
}

std::string TempPath(const std::string& ext) {
  return "/tmp/brt-token-table-test-" + std::to_string(getpid()) + ext;
}

TEST(TokenTableTest, ChoosesFormatByExtensionOrRequest) {
  EXPECT_EQ(*ChooseTableFormat("auto", "x.jsonl"), TableFormat::kJsonl);
  EXPECT_EQ(*ChooseTableFormat("auto", "x.json"), TableFormat::kJsonl);
  EXPECT_EQ(*ChooseTableFormat("auto", "x.tsv"), TableFormat::kTsv);
  EXPECT_EQ(*ChooseTableFormat("jsonl", "x.tsv"), TableFormat::kJsonl);
  EXPECT_EQ(ChooseTableFormat("csv", "x").status().code(), absl::StatusCode::kInvalidArgument);
}

class TokenTableRoundTrip : public ::testing::TestWithParam<std::tuple<TableFormat, bool>> {};

TEST_P(TokenTableRoundTrip, WritesAndReadsBack) {
  const auto [format, with_reset] = GetParam();
  const std::string path = TempPath(format == TableFormat::kTsv ? ".tsv" : ".jsonl");
  {
    auto w = TokenTableWriter::Open(path, format, with_reset);
    ASSERT_TRUE(w.ok()) << w.status();
    for (const TokenRow& r : Rows(with_reset)) (*w)->Write(r);
    ASSERT_TRUE((*w)->Close().ok());
  }
  absl::StatusOr<TokenTable> t = ReadTokenTable(path);
  std::remove(path.c_str());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->has_reset, with_reset);
  const std::vector<TokenRow> want = Rows(with_reset);
  ASSERT_EQ(t->rows.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(t->rows[i].position, want[i].position);
    EXPECT_EQ(t->rows[i].token_id, want[i].token_id);
    EXPECT_EQ(t->rows[i].byte_begin, want[i].byte_begin);
    EXPECT_EQ(t->rows[i].byte_end, want[i].byte_end);
    EXPECT_EQ(static_cast<float>(t->rows[i].nll), static_cast<float>(want[i].nll));
    if (with_reset) {
      EXPECT_NEAR(*t->rows[i].nll_reset, *want[i].nll_reset, 1e-6);
    }
  }
  // TSV keeps the exact bytes; JSON Lines keeps valid UTF-8 only.
  if (format == TableFormat::kTsv) {
    EXPECT_EQ(t->rows[1].piece, "\t\n\xFF");
  }
  EXPECT_EQ(t->rows[2].piece, "\xC3\xA9");
}

INSTANTIATE_TEST_SUITE_P(Formats, TokenTableRoundTrip,
                         ::testing::Combine(::testing::Values(TableFormat::kTsv,
                                                              TableFormat::kJsonl),
                                            ::testing::Bool()));

TEST(TokenTableTest, RejectsForeignContent) {
  EXPECT_EQ(ParseTokenTable("a\tb\n1\t2\n", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTokenTable("{\"position\": 1}\n", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ParseTokenTable("position\ttoken_id\tpiece\tbyte_begin\tbyte_end\tnll\n1\t2\tx\t0\t1\n", "x")
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadTokenTable("/nonexistent/file").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace brt::client
