#include "client/core/args.h"

#include <gtest/gtest.h>

namespace brt::client {
namespace {

struct Fixture {
  bool flag = false;
  std::string name = "dflt";
  int64_t n = 3;
  double x = 0.5;
  std::optional<uint64_t> seed;
  std::optional<double> temp;
  std::vector<std::string> stops, pos;
  ArgParser parser{"brt test", "[options] A...", "A test command."};
  Fixture() {
    parser.AddFlag("flag", &flag, "a flag");
    parser.AddString("name", &name, "S", "a string");
    parser.AddInt("n", &n, "an int");
    parser.AddDouble("x", &x, "a double");
    parser.AddOptionalUint("seed", &seed, "a seed");
    parser.AddOptionalDouble("temp", &temp, "a temperature");
    parser.AddRepeated("stop", &stops, "T", "stops");
    parser.SetPositionals(&pos, 1, 2, "A  things");
  }
};

TEST(ArgParserTest, ParsesBothValueFormsFlagsAndInterleavedPositionals) {
  Fixture f;
  ASSERT_TRUE(f.parser
                  .Parse({"a", "--flag", "--name=v", "--n", "7", "--x=2.5", "--seed=42", "--stop",
                          "x", "--stop=y", "b"})
                  .ok());
  EXPECT_TRUE(f.flag);
  EXPECT_EQ(f.name, "v");
  EXPECT_EQ(f.n, 7);
  EXPECT_DOUBLE_EQ(f.x, 2.5);
  EXPECT_EQ(f.seed, 42u);
  EXPECT_FALSE(f.temp.has_value());
  EXPECT_EQ(f.stops, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(f.pos, (std::vector<std::string>{"a", "b"}));
}

TEST(ArgParserTest, DoubleDashEndsOptionsAndDashIsPositional) {
  Fixture f;
  ASSERT_TRUE(f.parser.Parse({"--", "--flag"}).ok());
  EXPECT_FALSE(f.flag);
  EXPECT_EQ(f.pos, (std::vector<std::string>{"--flag"}));
  Fixture g;
  ASSERT_TRUE(g.parser.Parse({"-"}).ok());
  EXPECT_EQ(g.pos, (std::vector<std::string>{"-"}));
}

TEST(ArgParserTest, FlagTakesExplicitBoolean) {
  Fixture f;
  f.flag = true;
  ASSERT_TRUE(f.parser.Parse({"--flag=false", "a"}).ok());
  EXPECT_FALSE(f.flag);
  EXPECT_EQ(f.parser.Parse({"--flag=maybe", "a"}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ArgParserTest, RejectsUnknownMalformedAndMissing) {
  EXPECT_EQ(Fixture().parser.Parse({"--nope", "a"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fixture().parser.Parse({"-x", "a"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fixture().parser.Parse({"--n=seven", "a"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fixture().parser.Parse({"--seed=-1", "a"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fixture().parser.Parse({"--x=nan", "a"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fixture().parser.Parse({"a", "--name"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fixture().parser.Parse({}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fixture().parser.Parse({"a", "b", "c"}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ArgParserTest, HelpStopsParsingAndListsOptionsWithDefaults) {
  Fixture f;
  ASSERT_TRUE(f.parser.Parse({"--help", "--nope"}).ok());
  EXPECT_TRUE(f.parser.help_requested());
  const std::string help = f.parser.Help();
  EXPECT_NE(help.find("Usage: brt test [options] A..."), std::string::npos);
  EXPECT_NE(help.find("--name=S"), std::string::npos);
  EXPECT_NE(help.find("(default: dflt)"), std::string::npos);
  EXPECT_NE(help.find("(default: 3)"), std::string::npos);
}

TEST(ArgParserTest, NoPositionalsDeclaredRejectsAny) {
  bool b = false;
  ArgParser p("brt x", "", "");
  p.AddFlag("b", &b, "");
  EXPECT_EQ(p.Parse({"stray"}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace brt::client
