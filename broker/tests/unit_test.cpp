// Unit tests of the plugin's pure parts: client id parsing, topic rules, configuration.

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "auth_plugin.h"
#include "client_id.h"
#include "iot/common/crypto.h"
#include "plugin_config.h"
#include "topic_rules.h"

namespace iot::broker {
namespace {

using std::chrono::hours;
using std::chrono::seconds;
using std::chrono::sys_days;
using ::testing::HasSubstr;

constexpr char kKey[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

TEST(ClientIdTest, ParsesFromTheRightSoDeviceIdsMayContainUnderscores) {
  const auto parsed = ParseClientId("prod_1_node_7_0_1_2026112617");
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->device_id, "prod_1_node_7");
  EXPECT_EQ(parsed->sign_type, 1);
  EXPECT_EQ(parsed->timestamp, "2026112617");
  const sys_days day{std::chrono::year{2026} / 11 / 26};
  EXPECT_EQ(parsed->hour_start, day + hours{17});
}

TEST(ClientIdTest, RejectsMalformedClientIds) {
  for (const char* bad : {
           "", "p1_n1",
           "_0_0_2026112617",        // no device id
           "p1_n1_1_0_2026112617",   // second field must be 0
           "p1_n1_0_2_2026112617",   // sign type 0 or 1
           "p1_n1_0_0_202611261",    // 9 digits
           "p1_n1_0_0_20261126170",  // 11 digits
           "p1_n1_0_0_2026113217",   // day 32
           "p1_n1_0_0_2026022917",   // not a leap year
           "p1_n1_0_0_2026112624",   // hour 24
           "p1_n1_0_0_20261126x7",   // not a digit
           "p1/n1_0_0_2026112617",   // '/' would reach another device's topics
           "p1+_0_0_2026112617",     // wildcard
           "p1#_0_0_2026112617",     // wildcard
           "p1 n1_0_0_2026112617",   // whitespace
           "p1_n1-0_0_2026112617",   // separator
       }) {
    EXPECT_FALSE(ParseClientId(bad).has_value()) << bad;
  }
  EXPECT_TRUE(ParseClientId("p1_n1_0_0_2024022917").has_value()) << "leap day";
}

TEST(ClientIdTest, TimestampsFarFromNowAreOutsideTheSkewWithoutOverflow) {
  // Years the clock's nanoseconds cannot hold (about 1678..2262): compared in seconds.
  const auto now = std::chrono::system_clock::now();
  for (const char* id : {"p1_n1_0_1_0004022917", "p1_n1_0_1_9999123123", "p1_n1_0_1_0000010100"}) {
    const auto parsed = ParseClientId(id);
    ASSERT_TRUE(parsed.has_value()) << id;
    EXPECT_FALSE(TimestampWithinSkew(parsed->hour_start, now, std::chrono::hours{1})) << id;
  }
}

TEST(ClientIdTest, TimestampSkewCoversTheWholeHourPlusTheSkew) {
  const auto hour = sys_days{std::chrono::year{2026} / 11 / 26} + hours{17};
  const auto skew = seconds{3600};
  EXPECT_TRUE(TimestampWithinSkew(hour, hour + std::chrono::minutes{30}, skew));
  EXPECT_TRUE(TimestampWithinSkew(hour, hour - std::chrono::minutes{59}, skew));
  EXPECT_TRUE(TimestampWithinSkew(hour, hour + std::chrono::minutes{119}, skew));
  EXPECT_FALSE(TimestampWithinSkew(hour, hour - std::chrono::minutes{61}, skew));
  EXPECT_FALSE(TimestampWithinSkew(hour, hour + std::chrono::minutes{121}, skew));
  EXPECT_FALSE(TimestampWithinSkew(hour, hour + hours{24}, skew));
}

TEST(ClientIdTest, FormatsTheCurrentHour) {
  const auto time = sys_days{std::chrono::year{2026} / 1 / 5} + hours{7} + std::chrono::minutes{59};
  EXPECT_EQ(FormatClientTimestamp(time), "2026010507");
}

TEST(TopicRulesTest, DevicePublishesOnlyItsOwnUpTopics) {
  const std::string id = "p1_n1";
  for (const char* ok : {
           "$oc/devices/p1_n1/sys/properties/report",
           "$oc/devices/p1_n1/sys/messages/up",
           "$oc/devices/p1_n1/sys/events/up",
           "$oc/devices/p1_n1/sys/gateway/sub_devices/properties/report",
           "$oc/devices/p1_n1/sys/commands/response/request_id=42",
           "$oc/devices/p1_n1/sys/properties/set/response/request_id=a-b",
           "$oc/devices/p1_n1/sys/properties/get/response/request_id=7",
           "$oc/devices/p1_n1/sys/shadow/get/request_id=9",
           "$oc/devices/p1_n1/user/anything/below",
       }) {
    EXPECT_TRUE(DeviceMayPublish(id, ok)) << ok;
  }
  for (const char* denied : {
           "$oc/devices/p1_n2/sys/properties/report",       // another device
           "$oc/devices/p1_n1x/sys/properties/report",      // prefix of another id
           "$oc/devices/p1/sys/properties/report",          // id is a prefix of ours
           "$oc/devices/p1_n1/sys/commands/request_id=42",  // a down-topic
           "$oc/devices/p1_n1/sys/messages/down",
           "$oc/devices/p1_n1/sys/commands/response/request_id=",
           "$oc/devices/p1_n1/sys/commands/response/request_id=1/x",
           "$oc/devices/p1_n1/sys/properties/report/extra",
           "$oc/devices/p1_n1/user/",
           "$oc/devices/p1_n1/other",
           "$iot/down/p1_n1/sys/commands/request_id=1",
           "$iot/presence/p1_n1",
           "devices/p1_n1/sys/properties/report",
       }) {
    EXPECT_FALSE(DeviceMayPublish(id, denied)) << denied;
  }
}

TEST(TopicRulesTest, DeviceSubscribesAndReceivesOnlyBelowItsOwnPrefix) {
  const std::string id = "p1_n1";
  for (const char* ok : {"$oc/devices/p1_n1/#", "$oc/devices/p1_n1/sys/#",
                         "$oc/devices/p1_n1/sys/commands/+", "$oc/devices/p1_n1/user/x/#"}) {
    EXPECT_TRUE(DeviceMaySubscribe(id, ok)) << ok;
  }
  for (const char* denied :
       {"$oc/devices/+/sys/#", "$oc/devices/#", "#", "$oc/devices/p1_n2/sys/#", "$oc/devices/p1_n1",
        "$oc/devices/p1_n1/+", "$iot/#", "$iot/presence/+", "$share/g/$oc/devices/p1_n1/sys/#",
        "$oc/devices/p1_n1/other/#"}) {
    EXPECT_FALSE(DeviceMaySubscribe(id, denied)) << denied;
  }
  EXPECT_TRUE(DeviceMayReceive(id, "$oc/devices/p1_n1/sys/commands/request_id=1"));
  EXPECT_FALSE(DeviceMayReceive(id, "$oc/devices/p1_n2/sys/commands/request_id=1"));
  EXPECT_FALSE(DeviceMayReceive(id, "$iot/presence/p1_n1"));
}

TEST(TopicRulesTest, UplinkIsRelayedBelowIotUpInTheDevicesPartition) {
  const uint32_t p = UplinkPartition("p1_n1", 16);
  EXPECT_LT(p, 16U);
  EXPECT_EQ(UplinkRelayTopic("p1_n1", "$oc/devices/p1_n1/sys/properties/report", 16),
            fmt::format("iot/up/{}/p1_n1/sys/properties/report", p));
  EXPECT_EQ(UplinkRelayTopic("p1_n1", "$oc/devices/p1_n1/user/a/b", 16),
            fmt::format("iot/up/{}/p1_n1/user/a/b", p));
  EXPECT_EQ(PartitionedPresenceTopic("p1_n1", 16), fmt::format("iot/presence/{}/p1_n1", p));
  EXPECT_EQ(UplinkRelayTopic("p1_n1", "$oc/devices/p1_n1/sys/messages/up", 1),
            "iot/up/0/p1_n1/sys/messages/up");
  EXPECT_FALSE(UplinkRelayTopic("p1_n1", "$oc/devices/p1_n2/sys/messages/up", 16).has_value());
  EXPECT_FALSE(UplinkRelayTopic("p1_n1", "$oc/devices/p1_n1/", 16).has_value());
  EXPECT_FALSE(UplinkRelayTopic("p1_n1", "iot/up/p1_n1/sys/messages/up", 16).has_value());
}

TEST(TopicRulesTest, PartitionsSpreadDevicesAndAreStable) {
  // FNV-1a of the id: the gateway and every broker agree without sharing state.
  EXPECT_EQ(UplinkPartition("a", 1000), 0xe40c292cu % 1000);
  std::vector<int> counts(16, 0);
  for (int i = 0; i < 1600; ++i) {
    ++counts[UplinkPartition(fmt::format("p1_dev{}", i), 16)];
  }
  for (const int count : counts) {
    EXPECT_GT(count, 50);
    EXPECT_LT(count, 150);
  }
}

TEST(TopicRulesTest, ParsesDownlinkTopics) {
  const auto down = ParseDownlinkTopic("$iot/down/p1_n1/sys/commands/request_id=42");
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(down->device_id, "p1_n1");
  EXPECT_EQ(down->suffix, "sys/commands/request_id=42");
  EXPECT_EQ(down->device_topic, "$oc/devices/p1_n1/sys/commands/request_id=42");
  EXPECT_TRUE(ParseDownlinkTopic("$iot/down/p1_n1/user/x").has_value());
  for (const char* bad : {"$iot/down/p1_n1", "$iot/down/p1_n1/", "$iot/down//sys/x",
                          "$iot/down/p1_n1/other/x", "$iot/down/p1_n1/sys/", "$iot/presence/x"}) {
    EXPECT_FALSE(ParseDownlinkTopic(bad).has_value()) << bad;
  }
}

std::function<const char*(const char*)> Env(std::map<std::string, std::string> values) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(values));
  return [shared](const char* name) -> const char* {
    const auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

TEST(PluginConfigTest, ParsesEveryOption) {
  const std::string hash = common::Sha256Hex("s1pw1");
  auto config = ParsePluginConfig(
      {
          {"redis_url", "redis://127.0.0.1:6390/0"},
          {"secret_key_env", "IOT_SECRET_KEY"},
          {"service_accounts", "gateway:s1:" + hash},
          {"service_accounts_env", "IOT_BROKER_SERVICE_ACCOUNTS"},
          {"cache_ttl_ms", "1000"},
          {"cache_size", "7"},
          {"cache_max_stale_ms", "2000"},
          {"redis_timeout_ms", "50"},
          {"time_skew_s", "60"},
          {"recheck_interval_ms", "500"},
          {"uplink_partitions", "32"},
          {"unknown_cache_size", "9"},
          {"unknown_cache_ttl_ms", "300"},
          {"connect_rate_per_address", "5"},
          {"connect_burst_per_address", "11"},
          {"lookup_rate", "40"},
          {"stats_interval_ms", "700"},
      },
      Env({{"IOT_SECRET_KEY", kKey},
           {"IOT_BROKER_SERVICE_ACCOUNTS", "rules:s2:" + common::Sha256Hex("s2pw2")}}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->secret_key, kKey);
  ASSERT_EQ(config->service_accounts.size(), 2u);
  EXPECT_TRUE(VerifyServiceAccountPassword(config->service_accounts[0], "pw1"));
  EXPECT_FALSE(VerifyServiceAccountPassword(config->service_accounts[0], "pw2"));
  EXPECT_TRUE(VerifyServiceAccountPassword(config->service_accounts[1], "pw2"));
  EXPECT_EQ(config->cache_ttl, std::chrono::milliseconds{1000});
  EXPECT_EQ(config->cache_size, 7u);
  EXPECT_EQ(config->cache_max_stale, std::chrono::milliseconds{2000});
  EXPECT_EQ(config->redis_timeout, std::chrono::milliseconds{50});
  EXPECT_EQ(config->time_skew, seconds{60});
  EXPECT_EQ(config->recheck_interval, std::chrono::milliseconds{500});
  EXPECT_EQ(config->uplink_partitions, 32u);
  EXPECT_EQ(config->unknown_cache_size, 9u);
  EXPECT_EQ(config->unknown_cache_ttl, std::chrono::milliseconds{300});
  EXPECT_EQ(config->connect_rate_per_address, 5.0);
  EXPECT_EQ(config->connect_burst_per_address, 11.0);
  EXPECT_EQ(config->lookup_rate, 40.0);
  EXPECT_EQ(config->stats_interval, std::chrono::milliseconds{700});
  const std::string description = DescribeConfig(*config);
  EXPECT_THAT(description, HasSubstr("service_accounts=[gateway,rules]"));
  EXPECT_THAT(description, ::testing::Not(HasSubstr(kKey)));
}

TEST(PluginConfigTest, BadOrMissingOptionsAreErrorsNamingTheOption) {
  const auto env = Env({{"IOT_SECRET_KEY", kKey}});
  const std::pair<std::string, std::string> redis{"redis_url", "redis://127.0.0.1/0"};
  const std::pair<std::string, std::string> key{"secret_key", kKey};
  struct Case {
    std::vector<std::pair<std::string, std::string>> options;
    std::string expected;
  };
  for (const auto& [options, expected] : std::vector<Case>{
           {{key}, "plugin_opt_redis_url"},
           {{{"redis_url", "http://x"}, key}, "plugin_opt_redis_url"},
           {{redis}, "plugin_opt_secret_key_env"},
           {{redis, {"secret_key_env", "UNSET_VARIABLE"}}, "UNSET_VARIABLE is not set"},
           {{redis, {"secret_key", "short"}}, "plugin_opt_secret_key"},
           {{redis, key, {"cache_ttl_ms", "-1"}}, "plugin_opt_cache_ttl_ms"},
           {{redis, key, {"cache_size", "many"}}, "plugin_opt_cache_size"},
           {{redis, key, {"uplink_partitions", "0"}}, "plugin_opt_uplink_partitions"},
           {{redis, key, {"uplink_partitions", "1025"}}, "plugin_opt_uplink_partitions: at most"},
           {{redis, key, {"connect_rate_per_address", "0"}}, "plugin_opt_connect_rate_per_address"},
           {{redis, key, {"lookup_rate", "fast"}}, "plugin_opt_lookup_rate"},
           {{redis, key, {"service_accounts", "gateway:salt"}}, "plugin_opt_service_accounts"},
           {{redis, key, {"service_accounts", "my_gw:s:" + common::Sha256Hex("x")}}, "'_'"},
           {{redis, key, {"service_accounts", "gw:s:ABC"}}, "64 lowercase hex"},
           {{redis, key, {"typo_option", "1"}}, "plugin_opt_typo_option: unknown option"},
       }) {
    const auto config = ParsePluginConfig(options, env);
    ASSERT_FALSE(config.ok()) << expected;
    EXPECT_THAT(std::string(config.status().message()), HasSubstr(expected));
  }
}

TEST(FormatIsoTimeTest, UtcWithMilliseconds) {
  const auto time = sys_days{std::chrono::year{2026} / 11 / 26} + hours{17} +
                    std::chrono::minutes{42} + seconds{48} + std::chrono::milliseconds{7};
  EXPECT_EQ(FormatIsoTime(time), "2026-11-26T17:42:48.007Z");
}

}  // namespace
}  // namespace iot::broker
