#include "iot/common/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

namespace iot::common {
namespace {

using ::testing::HasSubstr;

EnvReader FromMap(std::map<std::string, std::string> values) {
  return EnvReader(
      [values = std::move(values)](const std::string& name) -> std::optional<std::string> {
        auto it = values.find(name);
        return it == values.end() ? std::nullopt : std::optional<std::string>(it->second);
      });
}

TEST(EnvReaderTest, DefaultsWhenUnsetOrEmpty) {
  EnvReader env = FromMap({{"IOT_X_EMPTY", ""}});
  EXPECT_EQ(env.String("IOT_X_NAME", "dflt"), "dflt");
  EXPECT_EQ(env.Int("IOT_X_EMPTY", 7, 0, 10), 7);
  EXPECT_EQ(env.Port("IOT_X_PORT", 50054), 50054);
  EXPECT_TRUE(env.Bool("IOT_X_FLAG", true));
  EXPECT_EQ(env.Duration("IOT_X_T", std::chrono::seconds(3)), std::chrono::seconds(3));
  EXPECT_NO_THROW(env.Finish());
}

TEST(EnvReaderTest, ParsesValues) {
  EnvReader env = FromMap({{"P", "8080"},
                           {"B", "off"},
                           {"D1", "250ms"},
                           {"D2", "5"},
                           {"D3", "2m"},
                           {"D4", "1d"},
                           {"L", "WARN"}});
  EXPECT_EQ(env.Port("P", 1), 8080);
  EXPECT_FALSE(env.Bool("B", true));
  EXPECT_EQ(env.Duration("D1", {}), std::chrono::milliseconds(250));
  EXPECT_EQ(env.Duration("D2", {}), std::chrono::seconds(5));
  EXPECT_EQ(env.Duration("D3", {}), std::chrono::minutes(2));
  EXPECT_EQ(env.Duration("D4", {}), std::chrono::hours(24));
  EXPECT_EQ(env.LogLevel("L", "info"), "warn");
  EXPECT_NO_THROW(env.Finish());
}

TEST(EnvReaderTest, EveryBadVariableIsNamed) {
  EnvReader env = FromMap({{"IOT_SHADOW_GRPC_PORT", "abc"},
                           {"IOT_SHADOW_METRICS_PORT", "70000"},
                           {"IOT_LOG_LEVEL", "loud"},
                           {"IOT_SHADOW_DRAIN_TIMEOUT", "soon"},
                           {"IOT_X_FLAG", "maybe"}});
  ServerConfig::Read(env, "shadow", "IOT_SHADOW", 50054, 9104);
  env.Bool("IOT_X_FLAG", false);
  env.Required("IOT_X_REQUIRED");
  try {
    env.Finish();
    FAIL() << "Finish() accepted bad values";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_THAT(what, HasSubstr("IOT_SHADOW_GRPC_PORT: 'abc' is not an integer"));
    EXPECT_THAT(what, HasSubstr("IOT_SHADOW_METRICS_PORT: 70000 is out of range"));
    EXPECT_THAT(what, HasSubstr("IOT_LOG_LEVEL: 'loud' is not one of"));
    EXPECT_THAT(what, HasSubstr("IOT_SHADOW_DRAIN_TIMEOUT"));
    EXPECT_THAT(what, HasSubstr("IOT_X_FLAG"));
    EXPECT_THAT(what, HasSubstr("IOT_X_REQUIRED: is required"));
  }
}

TEST(ServerConfigTest, ReadsPrefixedValuesWithServiceOverride) {
  EnvReader env = FromMap({{"IOT_SHADOW_GRPC_PORT", "6000"},
                           {"IOT_LOG_LEVEL", "debug"},
                           {"IOT_SHADOW_LOG_LEVEL", "error"},
                           {"IOT_SHADOW_LISTEN_ADDRESS", "127.0.0.1"}});
  const ServerConfig c = ServerConfig::Read(env, "shadow", "IOT_SHADOW", 50054, 9104);
  EXPECT_EQ(c.grpc_port, 6000);
  EXPECT_EQ(c.metrics_port, 9104);
  EXPECT_EQ(c.log_level, "error");
  EXPECT_EQ(c.listen_address, "127.0.0.1");
  EXPECT_NO_THROW(env.Finish());
}

TEST(BackendConfigTest, RejectsMalformedUrls) {
  EnvReader env = FromMap({{"IOT_PG_URL", "not a url"}, {"IOT_REDIS_URL", "redis://h:0"}});
  BackendConfig::Read(env, "IOT_SHADOW");
  ASSERT_EQ(env.errors().size(), 2u);
  EXPECT_THAT(env.errors()[0], HasSubstr("IOT_PG_URL"));
  EXPECT_THAT(env.errors()[1], HasSubstr("IOT_REDIS_URL"));
}

}  // namespace
}  // namespace iot::common
