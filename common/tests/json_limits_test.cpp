#include "iot/common/json_limits.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "iot/common/status.h"

namespace iot::common {
namespace {

using ::testing::HasSubstr;

std::string Nested(std::size_t depth, std::string_view inner = "1") {
  return std::string(depth, '[') + std::string(inner) + std::string(depth, ']');
}

TEST(JsonLimitsTest, DepthCountsArraysAndObjectsButNotBracketsInStrings) {
  EXPECT_EQ(JsonNestingDepth("1"), 0U);
  EXPECT_EQ(JsonNestingDepth("{}"), 1U);
  EXPECT_EQ(JsonNestingDepth(R"({"a":[{"b":[1]}],"c":{}})"), 4U);
  EXPECT_EQ(JsonNestingDepth(R"({"a":"[[[[{{{{","b":"\"[[["})"), 1U);
  EXPECT_EQ(JsonNestingDepth(R"(["\\", [["\\\"["]]])"), 3U);
  EXPECT_EQ(JsonNestingDepth("]]]][[]"), 2U);  // malformed text is measured as far as it goes
}

TEST(JsonLimitsTest, ScanStopsJustAboveTheLimit) {
  const std::string deep = Nested(400'000);
  EXPECT_EQ(JsonNestingDepth(deep), 400'000U);
  EXPECT_EQ(JsonNestingDepth(deep, 64), 65U);
}

TEST(JsonLimitsTest, DocumentAtTheLimitsPassesOneOverIsRefusedNamingTheField) {
  const JsonLimits limits{.max_bytes = 200, .max_depth = 64};
  auto at = ParseJson("paras_json", Nested(64), limits);
  ASSERT_TRUE(at.ok()) << at.status();

  auto deep = ParseJson("paras_json", Nested(65), limits);
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(deep.status()), "paras_json");
  EXPECT_THAT(std::string(deep.status().message()), HasSubstr("nested deeper than 64 levels"));
  EXPECT_EQ(FindJsonLimitViolation(Nested(65), limits)->kind, JsonLimitKind::kTooDeep);

  const std::string big = "\"" + std::string(199, 'x') + "\"";
  EXPECT_TRUE(ParseJson("f", big.substr(1), limits).status().message().find("not valid JSON") !=
              std::string_view::npos);
  auto large = ParseJson("f", big, limits);
  ASSERT_FALSE(large.ok());
  EXPECT_THAT(std::string(large.status().message()),
              HasSubstr("JSON of 201 bytes exceeds the limit of 200"));
  EXPECT_EQ(FindJsonLimitViolation(big, limits)->kind, JsonLimitKind::kTooLarge);
  EXPECT_TRUE(ParseJson("f", big.substr(0, 199) + "\"", limits).ok());
}

TEST(JsonLimitsTest, HostileDocumentIsRefusedWithoutRecursion) {
  // The reported crash: 800 KB of an array nested 400,000 deep. Refused by the scan; nothing
  // parses or serialises it.
  auto parsed = ParseJson("content", Nested(400'000, ""), JsonLimits{});
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("nested deeper than 64"));
}

TEST(JsonLimitsTest, InternalLimitsLeaveRoomForTheEnvelope) {
  const JsonLimits limits{.max_bytes = 1000, .max_depth = 64};
  EXPECT_EQ(limits.Internal().max_depth, 64 + kEnvelopeDepth);
  EXPECT_GE(limits.Internal().max_bytes, 6 * limits.max_bytes);
}

TEST(JsonLimitsTest, ErrorTextLosesNlohmannsPrefix) {
  auto parsed = ParseJson("f", "{\"a\":", JsonLimits{});
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("f: not valid JSON (parse error"));
  EXPECT_THAT(std::string(parsed.status().message()), ::testing::Not(HasSubstr("json.exception")));
}

}  // namespace
}  // namespace iot::common
