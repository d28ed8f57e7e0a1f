#include "iot/common/url.h"

#include <gtest/gtest.h>

namespace iot::common {
namespace {

TEST(UrlTest, ParsesEveryPart) {
  auto url = ParseUrl("redis://user:p%40ss@127.0.0.1:6380/2?timeout=1");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->scheme, "redis");
  EXPECT_EQ(url->user, "user");
  EXPECT_EQ(url->password, "p@ss");
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, 6380);
  EXPECT_EQ(url->path, "2");
  EXPECT_EQ(url->query, "timeout=1");
}

TEST(UrlTest, DefaultPortAndIpv6) {
  auto url = ParseUrl("mqtt://broker", 1883);
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->port, 1883);
  auto v6 = ParseUrl("mqtt://[::1]:1884");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 1884);
}

TEST(UrlTest, RejectsBadInput) {
  EXPECT_FALSE(ParseUrl("no-scheme").ok());
  EXPECT_FALSE(ParseUrl("redis://:secret@").ok());
  EXPECT_FALSE(ParseUrl("redis://host:99999").ok());
  EXPECT_FALSE(ParseUrl("redis://host:12ab").ok());
  EXPECT_FALSE(ParseUrl("redis://u:%zz@host").ok());
  // The error never repeats the password.
  auto bad = ParseUrl("redis://u:topsecret@host:x");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(std::string(bad.status().message()).find("topsecret"), std::string::npos);
}

TEST(UrlTest, MaskUrlHidesPasswordsOnly) {
  EXPECT_EQ(MaskUrl("postgresql://iot:hunter2@db:5432/iot"), "postgresql://iot:***@db:5432/iot");
  EXPECT_EQ(MaskUrl("redis://:pw@r:6379/0"), "redis://:***@r:6379/0");
  EXPECT_EQ(MaskUrl("mqtt://broker:1883"), "mqtt://broker:1883");
  EXPECT_EQ(MaskUrl("a http://u:p@h/x and mqtt://v:q@m"), "a http://u:***@h/x and mqtt://v:***@m");
}

}  // namespace
}  // namespace iot::common
