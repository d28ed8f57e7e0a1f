#include "iot/device_gateway/presence.h"

#include <gtest/gtest.h>

namespace iot::device_gateway {
namespace {

TEST(ParsePresenceTest, ReadsThePluginsEvents) {
  auto event = ParsePresence(
      "$iot/presence/p1_n1",
      R"({"event":"connected","device_id":"p1_n1","client_id":"p1_n1_0_0_2026112617","time":"2026-11-26T17:42:48.123Z","reason":"connect","seq":4})");
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->device_id, "p1_n1");
  EXPECT_TRUE(event->online);
  EXPECT_EQ(event->time, "2026-11-26T17:42:48.123Z");
  auto gone = ParsePresence("$iot/presence/p1_n1",
                            R"({"event":"disconnected","time":"2026-11-26T17:43:00.000Z"})");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->online);
}

TEST(ParsePresenceTest, RejectsBadInputNamingTheField) {
  struct Case {
    const char* topic;
    const char* payload;
    const char* field;
  };
  const Case cases[] = {
      {"$iot/presence/", R"({"event":"connected","time":"t"})", "topic"},
      {"$oc/devices/d/sys/x", R"({"event":"connected","time":"t"})", "topic"},
      {"$iot/presence/d", "not json", "payload"},
      {"$iot/presence/d", R"({"event":"maybe","time":"t"})", "event"},
      {"$iot/presence/d", R"({"event":"connected"})", "time"},
      {"$iot/presence/d", R"({"event":"connected","device_id":"other","time":"t"})", "device_id"},
  };
  for (const Case& c : cases) {
    auto event = ParsePresence(c.topic, c.payload);
    ASSERT_FALSE(event.ok()) << c.payload;
    EXPECT_EQ(std::string(event.status().message()).rfind(c.field, 0), 0u)
        << event.status().message();
  }
}

TEST(ParsePresenceTest, ReadsThePartitionedTopicToo) {
  auto event = ParsePresence(
      "iot/presence/11/p1_n1",
      R"({"event":"disconnected","time":"2026-11-26T17:42:48.123Z","reason":"frozen","client_address":"10.0.0.7"})");
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->device_id, "p1_n1");
  EXPECT_FALSE(event->online);
  EXPECT_EQ(event->reason, "frozen");
  EXPECT_EQ(event->client_address, "10.0.0.7");
  for (const char* topic :
       {"iot/presence/a/b", "iot/presence/p1_n1", "iot/presence/1/a/b", "iot/presence/1/"}) {
    EXPECT_FALSE(ParsePresence(topic, R"({"event":"connected","time":"t"})").ok()) << topic;
  }
}

}  // namespace
}  // namespace iot::device_gateway
