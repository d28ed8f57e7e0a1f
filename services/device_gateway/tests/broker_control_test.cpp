#include "iot/device_gateway/broker_control.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>
#include <vector>

namespace iot::device_gateway {
namespace {

constexpr std::string_view kDropLog = "the broker dropped messages";

/// Records the partition counts it is given.
class FakePartitions final : public PartitionCountSink {
 public:
  void SetPartitionCount(uint32_t count) override { counts.push_back(count); }
  std::vector<uint32_t> counts;
};

class BrokerControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = spdlog::default_logger();
    auto logger = std::make_shared<spdlog::logger>(
        "test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_));
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  void TearDown() override { spdlog::set_default_logger(previous_); }

  static common::MqttMessage Message(std::string_view topic, std::string payload) {
    return {.topic = std::string(topic), .payload = std::move(payload), .qos = 1, .retain = false};
  }
  /// Log lines containing `text`.
  [[nodiscard]] size_t Logged(std::string_view text) const {
    size_t lines = 0;
    std::istringstream in(log_.str());
    for (std::string line; std::getline(in, line);) {
      if (line.find(text) != std::string::npos) {
        ++lines;
      }
    }
    return lines;
  }
  [[nodiscard]] double DroppedGauge() const { return metrics_->broker_dropped.Value(); }

  prometheus::Registry registry_;
  std::shared_ptr<GatewayMetrics> metrics_ = std::make_shared<GatewayMetrics>(registry_);
  std::shared_ptr<FakePartitions> partitions_ = std::make_shared<FakePartitions>();
  BrokerControl control_{partitions_, metrics_};

 private:
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(BrokerControlTest, SubscribesToBothControlTopics) {
  EXPECT_EQ(BrokerControl::kTopics[0], kPartitionsTopic);
  EXPECT_EQ(BrokerControl::kTopics[1], kBrokerDroppedTopic);
}

TEST_F(BrokerControlTest, AppliesThePartitionCount) {
  control_.OnMessage(Message(kPartitionsTopic, "16"));
  control_.OnMessage(Message(kPartitionsTopic, "32"));
  EXPECT_EQ(partitions_->counts, (std::vector<uint32_t>{16, 32}));
  EXPECT_EQ(Logged("malformed"), 0U);
}

TEST_F(BrokerControlTest, LogsAndIgnoresAMalformedPartitionCount) {
  control_.OnMessage(Message(kPartitionsTopic, "sixteen"));
  control_.OnMessage(Message(kPartitionsTopic, ""));
  EXPECT_TRUE(partitions_->counts.empty());
  EXPECT_EQ(Logged("malformed uplink partition count from the broker"), 2U);
}

TEST_F(BrokerControlTest, IgnoresThePartitionCountOnceTheOwnerIsGone) {
  std::weak_ptr<FakePartitions> gone = partitions_;
  partitions_.reset();
  ASSERT_TRUE(gone.expired());
  control_.OnMessage(Message(kPartitionsTopic, "16"));
  control_.OnMessage(Message(kPartitionsTopic, "sixteen"));  // not even logged: shutting down
  EXPECT_EQ(Logged("malformed"), 0U);
}

TEST_F(BrokerControlTest, SetsTheDroppedGaugeAndLogsOnlyWhenItGrows) {
  control_.OnMessage(Message(kBrokerDroppedTopic, "0"));
  EXPECT_EQ(DroppedGauge(), 0.0);
  EXPECT_EQ(Logged(kDropLog), 0U);

  control_.OnMessage(Message(kBrokerDroppedTopic, "5"));
  EXPECT_EQ(DroppedGauge(), 5.0);
  EXPECT_EQ(Logged(kDropLog), 1U);

  control_.OnMessage(Message(kBrokerDroppedTopic, "5"));  // the same count again
  EXPECT_EQ(DroppedGauge(), 5.0);
  EXPECT_EQ(Logged(kDropLog), 1U);

  control_.OnMessage(Message(kBrokerDroppedTopic, "2"));  // the broker restarted
  EXPECT_EQ(DroppedGauge(), 2.0);
  EXPECT_EQ(Logged(kDropLog), 1U);

  control_.OnMessage(Message(kBrokerDroppedTopic, "3"));
  EXPECT_EQ(DroppedGauge(), 3.0);
  EXPECT_EQ(Logged(kDropLog), 2U);
}

TEST_F(BrokerControlTest, IgnoresOtherTopics) {
  control_.OnMessage(Message("$SYS/broker/clients/connected", "7"));
  control_.OnMessage(Message("$iot/config/other", "16"));
  EXPECT_TRUE(partitions_->counts.empty());
  EXPECT_EQ(DroppedGauge(), 0.0);
  EXPECT_EQ(Logged(""), 0U);
}

}  // namespace
}  // namespace iot::device_gateway
