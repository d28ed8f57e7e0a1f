#include "iot/device_gateway/uplink_intake.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <string>
#include <vector>

#include "iot/device_gateway/presence.h"

namespace iot::device_gateway {
namespace {

constexpr std::string_view kReport = R"({"services":[{"service_id":"m","properties":{"v":1}}]})";

/// An UplinkIntake whose pipeline and broker acknowledgements are recorded.
class UplinkIntakeTest : public ::testing::Test {
 protected:
  UplinkIntake MakeIntake(UplinkLimits limits = {}) {
    return {[this](WorkItem item, UplinkPipeline::Ack ack) {
              submitted_.push_back(std::move(item));
              acks_.push_back(std::move(ack));
            },
            metrics_, limits, [this](uint64_t token) { acked_.push_back(token); }};
  }

  static common::MqttDelivery Delivery(std::string topic, std::string payload, uint64_t token,
                                       common::mqtt::UserProperties properties = {}) {
    return {.topic = std::move(topic),
            .payload = std::move(payload),
            .qos = token == 0 ? 0 : 1,
            .retain = false,
            .dup = false,
            .user_properties = std::move(properties),
            .token = token};
  }

  [[nodiscard]] double RejectedCount(std::string_view reason) const {
    return metrics_->uplink_rejected.Add({{"reason", std::string(reason)}}).Value();
  }
  [[nodiscard]] double AcceptedCount(std::string_view kind) const {
    return metrics_->uplink_messages.Add({{"kind", std::string(kind)}}).Value();
  }

  prometheus::Registry registry_;
  std::shared_ptr<GatewayMetrics> metrics_ = std::make_shared<GatewayMetrics>(registry_);
  std::vector<WorkItem> submitted_;
  std::vector<UplinkPipeline::Ack> acks_;
  std::vector<uint64_t> acked_;
};

TEST_F(UplinkIntakeTest, DeviceUplinkIsHandedOnAndAcknowledgedOnlyWhenThePipelineFinishesIt) {
  auto intake = MakeIntake();
  intake.OnDelivery(Delivery("iot/up/3/p1_n1/sys/properties/report", std::string(kReport), 7,
                             {{"iot-message-id", "m-1"}, {"iot-received-at", "1700000000123"}}));
  ASSERT_EQ(submitted_.size(), 1U);
  const auto* message = std::get_if<UplinkMessage>(&submitted_[0]);
  ASSERT_NE(message, nullptr);
  EXPECT_EQ(message->message_id, "m-1");
  EXPECT_EQ(message->device_id, "p1_n1");
  EXPECT_EQ(message->kind, UplinkKind::kPropertiesReport);
  EXPECT_EQ(message->payload, kReport);
  EXPECT_EQ(message->received_at_unix_ms, 1700000000123);
  EXPECT_EQ(AcceptedCount("properties_report"), 1);
  EXPECT_TRUE(acked_.empty()) << "nothing acknowledged before the pipeline finished it";
  ASSERT_TRUE(acks_[0]);
  acks_[0]();
  EXPECT_EQ(acked_, std::vector<uint64_t>{7});
}

TEST_F(UplinkIntakeTest, ARefusedMessageStillGoesOnAsARecordWithItsIdAndIsCounted) {
  auto intake = MakeIntake();
  intake.OnDelivery(Delivery("iot/up/3/p1_n1/sys/nonsense", "{}", 8, {{"iot-message-id", "m-2"}}));
  ASSERT_EQ(submitted_.size(), 1U);
  const auto* rejected = std::get_if<RejectedUplink>(&submitted_[0]);
  ASSERT_NE(rejected, nullptr);
  EXPECT_EQ(rejected->message_id, "m-2");
  EXPECT_EQ(rejected->reason, RejectReason::kUnknownTopic);
  EXPECT_EQ(RejectedCount("unknown_topic"), 1);
  acks_[0]();
  EXPECT_EQ(acked_, std::vector<uint64_t>{8});
}

TEST_F(UplinkIntakeTest, TheRateLimitIsPerIntakeAndDevice) {
  auto intake = MakeIntake({.rate_per_second = 1});
  for (uint64_t i = 0; i < 2; ++i) {
    intake.OnDelivery(Delivery("iot/up/0/p1_a/sys/messages/up", "x", 10 + i));
  }
  intake.OnDelivery(Delivery("iot/up/0/p1_b/sys/messages/up", "x", 12));
  ASSERT_EQ(submitted_.size(), 3U);
  EXPECT_TRUE(std::holds_alternative<UplinkMessage>(submitted_[0]));
  const auto* second = std::get_if<RejectedUplink>(&submitted_[1]);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->reason, RejectReason::kRateLimited);
  EXPECT_TRUE(std::holds_alternative<UplinkMessage>(submitted_[2])) << "another device";
  EXPECT_EQ(RejectedCount("rate_limited"), 1);
}

TEST_F(UplinkIntakeTest, PresenceEventsGoOnAndMalformedOnesAreAcknowledgedAtOnceAndCounted) {
  auto intake = MakeIntake();
  intake.OnDelivery(Delivery("iot/presence/3/p1_n1",
                             R"({"event":"connected","time":"2026-11-26T17:42:48.123Z"})", 20,
                             {{"iot-message-id", "pres-1"}}));
  ASSERT_EQ(submitted_.size(), 1U);
  const auto* event = std::get_if<PresenceEvent>(&submitted_[0]);
  ASSERT_NE(event, nullptr);
  EXPECT_EQ(event->message_id, "pres-1");
  EXPECT_EQ(event->device_id, "p1_n1");
  EXPECT_TRUE(event->online);
  EXPECT_EQ(AcceptedCount("presence"), 1);
  EXPECT_TRUE(acked_.empty());

  intake.OnDelivery(Delivery("iot/presence/3/p1_n1", "not json", 21));
  EXPECT_EQ(submitted_.size(), 1U) << "nothing to hand on";
  EXPECT_EQ(acked_, std::vector<uint64_t>{21}) << "acknowledged, or the broker sends it forever";
  EXPECT_EQ(RejectedCount("malformed"), 1);
}

TEST_F(UplinkIntakeTest, QosZeroHasNothingToAcknowledge) {
  auto intake = MakeIntake();
  intake.OnDelivery(Delivery("iot/up/1/p1_n1/sys/messages/up", "x", 0));
  ASSERT_EQ(acks_.size(), 1U);
  EXPECT_FALSE(acks_[0]);
  intake.OnDelivery(Delivery("iot/presence/3/p1_n1", "not json", 0));
  EXPECT_TRUE(acked_.empty());
}

TEST(ReceivedAtTest, TakesThePluginsTimeNeverLaterThanNowElseNow) {
  const auto at = [](std::string value) {
    common::MqttDelivery delivery;
    delivery.user_properties = {{"iot-received-at", std::move(value)}};
    return ReceivedAt(delivery, 5'000);
  };
  EXPECT_EQ(at("4000"), 4'000);
  EXPECT_EQ(at("6000"), 5'000) << "another machine's clock ahead of ours";
  for (const char* bad : {"", "0", "-3", "12ab", "99999999999999999999999"}) {
    EXPECT_EQ(at(bad), 5'000) << bad;
  }
  EXPECT_EQ(ReceivedAt(common::MqttDelivery{}, 5'000), 5'000);
}

}  // namespace
}  // namespace iot::device_gateway
