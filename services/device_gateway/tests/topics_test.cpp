#include "iot/device_gateway/topics.h"

#include <gtest/gtest.h>

#include <random>

namespace iot::device_gateway {
namespace {

TEST(UplinkTopicTest, ClassifiesEverySystemTopic) {
  struct Case {
    const char* topic;
    UplinkKind kind;
    const char* request_id;
  };
  const Case cases[] = {
      {"$oc/devices/p1_n1/sys/properties/report", UplinkKind::kPropertiesReport, ""},
      {"$oc/devices/p1_n1/sys/gateway/sub_devices/properties/report",
       UplinkKind::kGatewayPropertiesReport, ""},
      {"$oc/devices/p1_n1/sys/messages/up", UplinkKind::kMessageUp, ""},
      {"$oc/devices/p1_n1/sys/events/up", UplinkKind::kEventUp, ""},
      {"$oc/devices/p1_n1/sys/commands/response/request_id=42", UplinkKind::kCommandResponse, "42"},
      {"$oc/devices/p1_n1/sys/properties/set/response/request_id=a-b",
       UplinkKind::kPropertiesSetResponse, "a-b"},
      {"$oc/devices/p1_n1/sys/properties/get/response/request_id=x",
       UplinkKind::kPropertiesGetResponse, "x"},
      {"$oc/devices/p1_n1/sys/shadow/get/request_id=7", UplinkKind::kShadowGet, "7"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseUplinkTopic(c.topic);
    ASSERT_TRUE(parsed.has_value()) << c.topic;
    EXPECT_EQ(parsed->kind, c.kind) << c.topic;
    EXPECT_EQ(parsed->device_id, "p1_n1");
    EXPECT_EQ(parsed->request_id, c.request_id);
  }
  auto custom = ParseUplinkTopic("$oc/devices/d/user/alarms/high");
  ASSERT_TRUE(custom.has_value());
  EXPECT_EQ(custom->kind, UplinkKind::kCustom);
  EXPECT_EQ(custom->custom, "alarms/high");
}

TEST(UplinkTopicTest, RejectsEverythingElse) {
  for (const char* topic :
       {"", "$oc/devices/", "$oc/devices//sys/messages/up", "$oc/devices/d",
        "$oc/devices/d/sys/messages/down", "$oc/devices/d/sys/commands/request_id=1",
        "$oc/devices/d/sys/commands/response/request_id=", "$oc/devices/d/sys/commands/response/",
        "$oc/devices/d/sys/commands/response/request_id=1/extra", "$oc/devices/d/sys/unknown",
        "$oc/devices/d/user/", "$oc/devices/d/sys/properties/report/", "devices/d/sys/messages/up",
        "$iot/presence/d", "$oc/devices/d/sys/shadow/get/response/request_id=1"}) {
    EXPECT_FALSE(ParseUplinkTopic(topic).has_value()) << topic;
  }
}

TEST(UplinkTopicTest, RandomTopicsNeverCrash) {
  std::mt19937 rng(42);
  const std::string alphabet = "$oc/devicesyqrtpu_=1";
  for (int i = 0; i < 20000; ++i) {
    std::string topic = "$oc/devices/";
    const size_t len = rng() % 40;
    for (size_t j = 0; j < len; ++j) {
      topic.push_back(alphabet[rng() % alphabet.size()]);
    }
    auto parsed = ParseUplinkTopic(topic);
    if (parsed) {
      EXPECT_FALSE(parsed->device_id.empty());
    }
  }
}

TEST(DownlinkTopicTest, BuildsDeviceAndRelayTopics) {
  EXPECT_EQ(DownlinkTopic(DownlinkKind::kCommand, "p1_n1", "9"),
            "$oc/devices/p1_n1/sys/commands/request_id=9");
  EXPECT_EQ(DownlinkTopic(DownlinkKind::kPropertiesSet, "d", "1"),
            "$oc/devices/d/sys/properties/set/request_id=1");
  EXPECT_EQ(DownlinkTopic(DownlinkKind::kPropertiesGet, "d", "1"),
            "$oc/devices/d/sys/properties/get/request_id=1");
  EXPECT_EQ(DownlinkTopic(DownlinkKind::kMessageDown, "d", ""), "$oc/devices/d/sys/messages/down");
  EXPECT_EQ(DownlinkTopic(DownlinkKind::kMessageDown, "d", "", "user/cfg"),
            "$oc/devices/d/user/cfg");
  EXPECT_EQ(DownlinkTopic(DownlinkKind::kShadowResponse, "d", "5"),
            "$oc/devices/d/sys/shadow/get/response/request_id=5");
  EXPECT_EQ(DownlinkTopic(DownlinkKind::kEventDown, "d", ""), "$oc/devices/d/sys/events/down");
  EXPECT_EQ(RelayTopic("$oc/devices/d/sys/commands/request_id=9"),
            "$iot/down/d/sys/commands/request_id=9");
}

}  // namespace
}  // namespace iot::device_gateway
