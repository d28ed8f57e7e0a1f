#include "iot/rule_forwarding/sql/topic_filter.h"

#include <gtest/gtest.h>

#include <string>

namespace iot::rule_forwarding::sql {
namespace {

TEST(TopicFilter, Matches) {
  struct Case {
    const char* filter;
    const char* topic;
    bool matches;
  };
  const Case cases[] = {
      {"a/b", "a/b", true},
      {"a/b", "a/c", false},
      {"a/b", "a/b/c", false},
      {"a/b/c", "a/b", false},
      {"a/+", "a/b", true},
      {"a/+", "a/", true},  // an empty level is a level
      {"a/+", "a", false},
      {"a/+", "a/b/c", false},
      {"+/+", "/x", true},
      {"+", "a", true},
      {"+", "a/b", false},
      {"a/#", "a", true},  // '#' includes the parent level
      {"a/#", "a/b/c", true},
      {"a/#", "ab", false},
      {"#", "a/b", true},
      {"#", "/", true},
      {"a/+/c/#", "a/x/c", true},
      {"a/+/c/#", "a/x/d/e", false},
      {"$oc/devices/+/sys/properties/report", "$oc/devices/p1_n1/sys/properties/report", true},
      {"$oc/devices/+/sys/#", "$oc/devices/p1_n1/sys/events/up", true},
      {"$oc/devices/+/sys/#", "$oc/devices/p1_n1", false},
      {"#", "$oc/devices/p1_n1", false},  // MQTT: no leading wildcard on $ topics
      {"+/devices/#", "$oc/devices/p1_n1", false},
      {"$SYS/#", "$SYS/x", true},
      {"a/b", "", false},
      {"#", "", false},
      {"A/b", "a/b", false},  // case-sensitive
  };
  for (const Case& c : cases) {
    ASSERT_FALSE(ValidateTopicFilter(c.filter).has_value()) << c.filter;
    EXPECT_EQ(TopicMatchesFilter(c.filter, c.topic), c.matches) << c.filter << " vs " << c.topic;
  }
  EXPECT_FALSE(TopicMatchesFilter("", "a"));
}

TEST(TopicFilter, Validates) {
  struct Case {
    std::string filter;
    std::size_t offset;
    const char* message;
  };
  const Case cases[] = {
      {"", 0, "the filter is empty"},
      {"a/#/b", 2, "'#' must be the last level"},
      {"a/b#", 3, "'#' must occupy a whole level"},
      {"#a", 0, "'#' must occupy a whole level"},
      {"a/+b", 2, "'+' must occupy a whole level"},
      {"a+/b", 1, "'+' must occupy a whole level"},
      {std::string("a/\0", 3), 2, "NUL is not allowed"},
      {std::string(65536, 'a'), 65535, "the filter is longer than 65535 bytes"},
  };
  for (const Case& c : cases) {
    const auto error = ValidateTopicFilter(c.filter);
    ASSERT_TRUE(error.has_value()) << c.filter.substr(0, 20);
    EXPECT_EQ(error->offset, c.offset) << c.filter.substr(0, 20);
    EXPECT_EQ(error->message, c.message) << c.filter.substr(0, 20);
  }
  for (const char* ok : {"#", "+", "/", "a//b", "+/+/#", "$oc/devices/+/sys/#", "a b/ç"}) {
    EXPECT_FALSE(ValidateTopicFilter(ok).has_value()) << ok;
  }
}

}  // namespace
}  // namespace iot::rule_forwarding::sql
