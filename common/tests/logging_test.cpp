#include "iot/common/logging.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

namespace iot::common {
namespace {

class LoggingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("test", sink);
    logger->set_formatter(MakeJsonFormatter("shadow"));
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  void TearDown() override { spdlog::set_default_logger(previous_); }

  nlohmann::json LastLine() {
    std::string all = out_.str();
    EXPECT_FALSE(all.empty());
    EXPECT_EQ(all.back(), '\n');
    all.pop_back();
    const size_t nl = all.rfind('\n');
    return nlohmann::json::parse(nl == std::string::npos ? all : all.substr(nl + 1));
  }

  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(LoggingTest, PlainMessagesAreJsonWithEscaping) {
  spdlog::info("quote \" backslash \\ newline \n tab \t ctrl \x01 end");
  const auto line = LastLine();
  EXPECT_EQ(line["level"], "info");
  EXPECT_EQ(line["service"], "shadow");
  EXPECT_EQ(line["msg"], "quote \" backslash \\ newline \n tab \t ctrl \x01 end");
  EXPECT_EQ(line["ts"].get<std::string>().size(), 24u);  // 2026-11-26T17:42:48.123Z
}

TEST_F(LoggingTest, StructuredFieldsAndSecretsMasked) {
  LogWarn("connect failed", {{"url", "postgresql://iot:hunter2@db/iot"},
                             {"password", "hunter2"},
                             {"device_secret", "s3cr3t"},
                             {"attempt", 3},
                             {"nested", {{"api_key", "k"}}}});
  const auto line = LastLine();
  EXPECT_EQ(line["level"], "warning");
  EXPECT_EQ(line["msg"], "connect failed");
  EXPECT_EQ(line["url"], "postgresql://iot:***@db/iot");
  EXPECT_EQ(line["password"], "***");
  EXPECT_EQ(line["device_secret"], "***");
  EXPECT_EQ(line["nested"]["api_key"], "***");
  EXPECT_EQ(line["attempt"], 3);
  EXPECT_EQ(out_.str().find("hunter2"), std::string::npos);
  EXPECT_EQ(out_.str().find("s3cr3t"), std::string::npos);
}

TEST_F(LoggingTest, PlainMessagesAreMaskedToo) {
  spdlog::error("dial redis://:pw@r:6379 with authorization: Bearer abcdef123");
  const auto line = LastLine();
  EXPECT_EQ(line["msg"], "dial redis://:***@r:6379 with authorization: Bearer ***");
}

TEST_F(LoggingTest, LevelFilters) {
  spdlog::default_logger()->set_level(spdlog::level::warn);
  LogInfo("hidden");
  EXPECT_TRUE(out_.str().empty());
}

TEST(SecretFieldTest, Names) {
  EXPECT_TRUE(IsSecretField("Authorization"));
  EXPECT_TRUE(IsSecretField("mqtt_password"));
  EXPECT_TRUE(IsSecretField("secret"));
  EXPECT_FALSE(IsSecretField("device_id"));
}

}  // namespace
}  // namespace iot::common
