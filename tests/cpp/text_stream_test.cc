#include "server/core/text_stream.h"

#include <gtest/gtest.h>

namespace brt {
namespace {

TEST(TextStreamTest, PassesPlainText) {
  TextStream t({});
  EXPECT_EQ(t.Push("hello"), "hello");
  EXPECT_EQ(t.Push(" world"), " world");
  EXPECT_EQ(t.Flush(), "");
}

TEST(TextStreamTest, HoldsIncompleteUtf8) {
  TextStream t({});
  EXPECT_EQ(t.Push("caf\xC3"), "caf");
  EXPECT_EQ(t.Push("\xA9!"), "\xC3\xA9!");
  EXPECT_EQ(t.Push("\xF0\x9F"), "");
  EXPECT_EQ(t.Push("\x98"), "");
  EXPECT_EQ(t.Push("\x80"), "\xF0\x9F\x98\x80");
}

TEST(TextStreamTest, InvalidBytesBecomeReplacementCharacters) {
  TextStream t({});
  EXPECT_EQ(t.Push("a\xFF"), "a\xEF\xBF\xBD");
  EXPECT_EQ(t.Push("\xE2\x82"), "");
  EXPECT_EQ(t.Flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TextStreamTest, StopSequenceIsNotEmitted) {
  TextStream t({"\n\n", "END"});
  EXPECT_EQ(t.Push("line one\n"), "line one");  // "\n" could start "\n\n"
  EXPECT_FALSE(t.stopped());
  EXPECT_EQ(t.Push("more E"), "\nmore ");
  EXPECT_EQ(t.Push("Nx"), "ENx");
  EXPECT_EQ(t.Push("yy EN"), "yy ");
  EXPECT_EQ(t.Push("D tail"), "");
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.Flush(), "");
}

TEST(TextStreamTest, StopInsideOneToken) {
  TextStream t({"stop"});
  EXPECT_EQ(t.Push("abcstopdef"), "abc");
  EXPECT_TRUE(t.stopped());
}

TEST(TextStreamTest, FlushReleasesHeldPrefix) {
  TextStream t({"###"});
  EXPECT_EQ(t.Push("a##"), "a");
  EXPECT_EQ(t.Flush(), "##");
}

}  // namespace
}  // namespace brt
