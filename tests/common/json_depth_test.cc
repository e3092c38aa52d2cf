#include "common/json_depth.h"

#include <gtest/gtest.h>

#include <string>

namespace witmq {
namespace {

std::string nested(size_t depth, char open, char close) {
  return std::string(depth, open) + std::string(depth, close);
}

TEST(JsonDepthTest, AcceptsUpToTheLimit) {
  EXPECT_TRUE(check_json_depth("").ok());
  EXPECT_TRUE(check_json_depth("{\"a\": [1, {\"b\": 2}]}").ok());
  EXPECT_TRUE(check_json_depth(nested(kMaxJsonDepth, '[', ']')).ok());
  // Siblings do not add up: depth is nesting, not count.
  std::string wide;
  for (int i = 0; i < 1000; ++i) wide += "[[]],";
  EXPECT_TRUE(check_json_depth("[" + wide + "1]").ok());
}

TEST(JsonDepthTest, RefusesDeeperNestingOfEitherKind) {
  auto st = check_json_depth(nested(kMaxJsonDepth + 1, '[', ']'));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message.find("64"), std::string::npos) << st.error().message;
  std::string objects;
  for (size_t i = 0; i <= kMaxJsonDepth; ++i) objects += "{\"k\":";
  EXPECT_FALSE(check_json_depth(objects).ok());
  // A 2 MB document of nested arrays, the shape that overflowed the stack.
  EXPECT_FALSE(check_json_depth(std::string(2 << 20, '[')).ok());
  EXPECT_FALSE(check_json_depth("[[[", 2).ok());
  EXPECT_TRUE(check_json_depth("[[]][[]]", 2).ok());
}

TEST(JsonDepthTest, BracketsInStringsDoNotCount) {
  const std::string deep_text = "\"" + std::string(1000, '[') + "\"";
  EXPECT_TRUE(check_json_depth(deep_text).ok());
  // An escaped quote does not end the string.
  EXPECT_TRUE(check_json_depth("[\"\\\"[[[[\", 1]", 1).ok());
  EXPECT_FALSE(check_json_depth("[\"\\\\\", [1]]", 1).ok());
}

}  // namespace
}  // namespace witmq
