#include "iot/device_gateway/downlink.h"

#include <gtest/gtest.h>

#include "iot/common/status.h"

namespace iot::device_gateway {
namespace {

class FakePublisher final : public DevicePublisher {
 public:
  absl::StatusOr<bool> Publish(const std::string& device_topic, std::string_view body,
                               int requested_qos) override {
    topic = device_topic;
    payload = std::string(body);
    qos = requested_qos;
    if (!status.ok()) {
      return status;
    }
    return online;
  }
  std::string topic;
  std::string payload;
  int qos = -1;
  bool online = true;
  absl::Status status;
};

class DownlinkTest : public ::testing::Test {
 protected:
  DownlinkTest() : metrics_(registry_), service_(publisher_, metrics_, 100) {}
  prometheus::Registry registry_;
  GatewayMetrics metrics_;
  std::shared_ptr<FakePublisher> publisher_ = std::make_shared<FakePublisher>();
  DownlinkService service_;
};

TEST_F(DownlinkTest, BuildsTheTopicOfEachKind) {
  auto command = service_.Publish({.tenant_id = "t",
                                   .device_id = "p1_n1",
                                   .kind = DownlinkKind::kCommand,
                                   .request_id = "42",
                                   .payload = "{}",
                                   .qos = 1,
                                   .user_topic = {}});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_TRUE(command->online);
  EXPECT_EQ(command->topic, "$oc/devices/p1_n1/sys/commands/request_id=42");
  EXPECT_EQ(publisher_->qos, 1);
  auto message = service_.Publish({.tenant_id = "t",
                                   .device_id = "p1_n1",
                                   .kind = DownlinkKind::kMessageDown,
                                   .request_id = {},
                                   .payload = "raw",
                                   .qos = 0,
                                   .user_topic = "alerts/high"});
  ASSERT_TRUE(message.ok());
  EXPECT_EQ(message->topic, "$oc/devices/p1_n1/user/alerts/high");
  publisher_->online = false;
  auto offline = service_.Publish({.tenant_id = "t",
                                   .device_id = "p1_n1",
                                   .kind = DownlinkKind::kEventDown,
                                   .request_id = {},
                                   .payload = "{}",
                                   .qos = 1,
                                   .user_topic = {}});
  ASSERT_TRUE(offline.ok());
  EXPECT_FALSE(offline->online);
  EXPECT_EQ(metrics_.downlink.Add({{"kind", "event"}, {"result", "offline"}}).Value(), 1);
}

TEST_F(DownlinkTest, BadRequestsNameTheField) {
  const DownlinkRequest good{.tenant_id = "t",
                             .device_id = "p1_n1",
                             .kind = DownlinkKind::kPropertiesSet,
                             .request_id = "r",
                             .payload = "{}",
                             .qos = 1,
                             .user_topic = {}};
  struct Case {
    DownlinkRequest request;
    const char* field;
  };
  std::vector<Case> cases;
  auto with = [&](auto change, const char* field) {
    DownlinkRequest r = good;
    change(r);
    cases.push_back({r, field});
  };
  with([](auto& r) { r.device_id = ""; }, "device_id");
  with([](auto& r) { r.device_id = "a/b"; }, "device_id");
  with([](auto& r) { r.device_id = "+"; }, "device_id");
  with([](auto& r) { r.request_id = ""; }, "request_id");
  with([](auto& r) { r.request_id = "x/y"; }, "request_id");
  with([](auto& r) { r.qos = 2; }, "qos");
  with([](auto& r) { r.payload = std::string(101, 'x'); }, "payload");
  with([](auto& r) { r.user_topic = "user/x"; }, "user_topic");
  with(
      [](auto& r) {
        r.kind = DownlinkKind::kMessageDown;
        r.user_topic = "a/#";
      },
      "user_topic");
  for (const auto& c : cases) {
    auto result = service_.Publish(c.request);
    ASSERT_FALSE(result.ok()) << c.field;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(common::FieldOf(result.status()), c.field) << result.status();
  }
  EXPECT_TRUE(publisher_->topic.empty());
}

TEST_F(DownlinkTest, BrokerUnreachableIsUnavailable) {
  publisher_->status = absl::UnavailableError("not connected");
  auto result = service_.Publish({.tenant_id = "t",
                                  .device_id = "p1_n1",
                                  .kind = DownlinkKind::kEventDown,
                                  .request_id = {},
                                  .payload = "{}",
                                  .qos = 1,
                                  .user_topic = {}});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace iot::device_gateway
