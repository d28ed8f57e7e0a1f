#include "iot/device_gateway/downlink.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "iot/common/status.h"
#include "iot/device_gateway/alink/downlink_codec.h"
#include "iot/device_gateway/device_cache.h"

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

// An alink product's model as thing-model derives it from a TSL: the default function block is
// service `default`, a custom block `lamp2` its own service; callType kept as call_type.
constexpr std::string_view kAlinkModel = R"({
  "product_id": "a1Lamp00001", "name": "Lamp", "device_type": "Lamp", "protocol_type": "MQTT",
  "data_format": "json", "manufacturer_name": "Acme",
  "service_capabilities": [{
    "service_id": "default",
    "properties": [
      {"property_name": "LightSwitch", "data_type": "boolean", "method": "RW"},
      {"property_name": "Brightness", "data_type": "int", "min": "0", "max": "100", "method": "RW"},
      {"property_name": "Temperature", "data_type": "decimal", "method": "R"}
    ],
    "commands": [
      {"command_name": "Reboot", "call_type": "sync",
       "paras": [{"para_name": "delay", "data_type": "int"}, {"para_name": "safe", "data_type": "boolean"}]},
      {"command_name": "Blink", "call_type": "async",
       "paras": [{"para_name": "times", "data_type": "int"}]}
    ]
  }, {
    "service_id": "lamp2",
    "properties": [{"property_name": "On", "data_type": "boolean", "method": "RW"}],
    "commands": [{"command_name": "Flash", "call_type": "sync", "paras": []}]
  }]
})";

class FakeRegistry final : public DeviceContextSource {
 public:
  absl::StatusOr<DeviceContextData> GetDeviceContext(const std::string& device_id) override {
    ++calls;
    if (!status.ok()) {
      return status;
    }
    if (device_id == "a1Lamp00001_lamp@1") {
      return DeviceContextData{.device_id = device_id,
                               .tenant_id = "t",
                               .product_id = "a1Lamp00001",
                               .node_id = "lamp@1",
                               .dialect = "alink",
                               .model_version = 1,
                               .product_json = std::string(kAlinkModel)};
    }
    if (device_id == "p1_n1") {
      return DeviceContextData{.device_id = device_id,
                               .tenant_id = "t",
                               .product_id = "p1",
                               .node_id = "n1",
                               .dialect = "huawei",
                               .model_version = 1,
                               .product_json = std::string(kAlinkModel)};
    }
    return absl::NotFoundError("no such device");
  }
  int calls = 0;
  absl::Status status;
};

/// Shadow's device-get answer; the other owners are not called by the downlink.
class FakeOwners final : public Downstream {
 public:
  static OwnerAnswer Unused() { return absl::UnimplementedError("not used by the downlink"); }
  OwnerAnswer ReportProperties(const shadow::v1::ReportPropertiesRequest&) override {
    return Unused();
  }
  OwnerAnswer CompletePropertySet(const shadow::v1::PropertySetResult&) override {
    return Unused();
  }
  absl::StatusOr<std::string> GetDeviceShadow(
      const shadow::v1::DeviceShadowGetRequest& request) override {
    asked = request.device().device_id();
    if (!status.ok()) {
      return status;
    }
    return shadow;
  }
  OwnerAnswer ShadowPresence(const device_gateway::v1::PresenceEvents&) override {
    return Unused();
  }
  OwnerAnswer CompleteRequests(const command_dispatch::v1::CompleteRequestsRequest&) override {
    return Unused();
  }
  OwnerAnswer CommandPresence(const device_gateway::v1::PresenceEvents&) override {
    return Unused();
  }
  OwnerAnswer Ingest(const rule_forwarding::v1::IngestRequest&) override { return Unused(); }
  std::string shadow;
  std::string asked;
  absl::Status status;
};

class AlinkDownlinkTest : public ::testing::Test {
 protected:
  AlinkDownlinkTest()
      : metrics_(registry_),
        service_(publisher_, metrics_, 4096, std::make_shared<DeviceCache>(registry_source_),
                 owners_) {}

  absl::StatusOr<DownlinkResult> Publish(DownlinkKind kind, std::string request_id,
                                         std::string payload, std::string user_topic = {}) {
    return service_.Publish({.tenant_id = "t",
                             .device_id = "a1Lamp00001_lamp@1",
                             .kind = kind,
                             .request_id = std::move(request_id),
                             .payload = std::move(payload),
                             .qos = 1,
                             .user_topic = std::move(user_topic)});
  }
  nlohmann::json Sent() const { return nlohmann::json::parse(publisher_->payload); }

  prometheus::Registry registry_;
  GatewayMetrics metrics_;
  std::shared_ptr<FakePublisher> publisher_ = std::make_shared<FakePublisher>();
  std::shared_ptr<FakeRegistry> registry_source_ = std::make_shared<FakeRegistry>();
  std::shared_ptr<FakeOwners> owners_ = std::make_shared<FakeOwners>();
  DownlinkService service_;
};

TEST_F(AlinkDownlinkTest, PropertySetGoesToPropertySetWithWireNamesAndBooleansAsIntegers) {
  auto result = Publish(DownlinkKind::kPropertiesSet, "8121390813",
                        R"({"object_device_id":"a1Lamp00001_lamp@1","services":[
                              {"service_id":"default","properties":{"LightSwitch":true,"Brightness":40}},
                              {"service_id":"lamp2","properties":{"On":false}}]})");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->topic, "/sys/a1Lamp00001/lamp@1/thing/service/property/set");
  // The broker plugin's relay form: $iot/down/{device_id}/alink{T}.
  EXPECT_EQ(
      publisher_->topic,
      "$oc/devices/a1Lamp00001_lamp@1/alink/sys/a1Lamp00001/lamp@1/thing/service/property/set");
  EXPECT_EQ(RelayTopic(publisher_->topic),
            "$iot/down/a1Lamp00001_lamp@1/alink/sys/a1Lamp00001/lamp@1/thing/service/property/set");
  EXPECT_EQ(publisher_->payload,
            R"({"id":"8121390813","version":"1.0","params":{"Brightness":40,"LightSwitch":1,)"
            R"("lamp2:On":0},"method":"thing.service.property.set"})");
  EXPECT_EQ(metrics_.downlink.Add({{"kind", "properties_set"}, {"result", "online"}}).Value(), 1);
}

TEST_F(AlinkDownlinkTest, PropertyGetAsksForTheReadableNames) {
  auto all =
      Publish(DownlinkKind::kPropertiesGet, "77", R"({"object_device_id":"a1Lamp00001_lamp@1"})");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->topic, "/sys/a1Lamp00001/lamp@1/thing/service/property/get");
  EXPECT_EQ(Sent()["params"],
            nlohmann::json::parse(R"(["LightSwitch","Brightness","Temperature","lamp2:On"])"));
  EXPECT_EQ(Sent()["method"], "thing.service.property.get");
  EXPECT_EQ(Sent()["id"], "77");
  auto one = Publish(DownlinkKind::kPropertiesGet, "78",
                     R"({"object_device_id":"a1Lamp00001_lamp@1","service_id":"lamp2"})");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(Sent()["params"], nlohmann::json::parse(R"(["lamp2:On"])"));
}

TEST_F(AlinkDownlinkTest, SyncCommandsGoOverRrpcAsyncOnesToTheirServiceTopic) {
  auto sync = Publish(DownlinkKind::kCommand, "4611686018427387904",
                      R"({"object_device_id":"a1Lamp00001_lamp@1","service_id":"default",
                          "command_name":"Reboot","paras":{"delay":3,"safe":true}})");
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ(sync->topic, "/sys/a1Lamp00001/lamp@1/rrpc/request/4611686018427387904");
  EXPECT_EQ(publisher_->payload,
            R"({"id":"4611686018427387904","version":"1.0","params":{"delay":3,"safe":1},)"
            R"("method":"thing.service.Reboot"})");

  auto async = Publish(DownlinkKind::kCommand, "12",
                       R"({"object_device_id":"a1Lamp00001_lamp@1","service_id":"default",
                           "command_name":"Blink","paras":{"times":2}})");
  ASSERT_TRUE(async.ok());
  EXPECT_EQ(async->topic, "/sys/a1Lamp00001/lamp@1/thing/service/Blink");
  EXPECT_EQ(Sent()["method"], "thing.service.Blink");

  auto custom = Publish(DownlinkKind::kCommand, "13",
                        R"({"object_device_id":"a1Lamp00001_lamp@1","service_id":"lamp2",
                            "command_name":"Flash","paras":{}})");
  ASSERT_TRUE(custom.ok());
  EXPECT_EQ(custom->topic, "/sys/a1Lamp00001/lamp@1/rrpc/request/13");
  EXPECT_EQ(Sent()["method"], "thing.service.lamp2:Flash");
}

TEST_F(AlinkDownlinkTest, MessagesGoToTheUserTopicOrDownRawWithTheirContent) {
  auto user = Publish(DownlinkKind::kMessageDown, {},
                      R"({"object_device_id":"a1Lamp00001_lamp@1","name":"n","id":"5",)"
                      R"("content":{"text":"hi"}})",
                      "alerts/high");
  ASSERT_TRUE(user.ok()) << user.status();
  EXPECT_EQ(user->topic, "/a1Lamp00001/lamp@1/user/alerts/high");
  EXPECT_EQ(publisher_->payload, R"({"text":"hi"})");
  auto text = Publish(DownlinkKind::kMessageDown, {},
                      R"({"object_device_id":"a1Lamp00001_lamp@1","name":"n","id":"6",)"
                      R"("content":"plain text"})");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->topic, "/sys/a1Lamp00001/lamp@1/thing/model/down_raw");
  EXPECT_EQ(publisher_->payload, "plain text");
  auto raw = Publish(DownlinkKind::kMessageDown, {}, std::string("\x01\x02{", 3));
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(publisher_->payload, std::string("\x01\x02{", 3));
}

TEST_F(AlinkDownlinkTest, ShadowPushesBecomeAControlWithTheWholeShadowAndItsVersion) {
  owners_->shadow = R"({"object_device_id":"a1Lamp00001_lamp@1","shadow":[
      {"service_id":"default","desired":{"properties":{"LightSwitch":true},"event_time":"20261207T101500Z"},
       "reported":{"properties":{"LightSwitch":false,"Brightness":3},"event_time":"20261207T101000Z"},"version":7},
      {"service_id":"lamp2","desired":{"properties":{}},"reported":{"properties":{"On":true}},"version":7}]})";
  auto result = Publish(DownlinkKind::kPropertiesSet, "shadow-0011aabb",
                        R"({"object_device_id":"a1Lamp00001_lamp@1","services":[
                              {"service_id":"default","properties":{"LightSwitch":true}}]})");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(owners_->asked, "a1Lamp00001_lamp@1");
  EXPECT_EQ(result->topic, "/shadow/get/a1Lamp00001/lamp@1");
  const nlohmann::json sent = Sent();
  EXPECT_EQ(sent["method"], "control");
  EXPECT_EQ(sent["version"], 7);
  EXPECT_EQ(sent["payload"]["status"], "success");
  EXPECT_EQ(sent["payload"]["state"]["desired"], nlohmann::json::parse(R"({"LightSwitch":1})"));
  EXPECT_EQ(sent["payload"]["state"]["reported"],
            nlohmann::json::parse(R"({"LightSwitch":0,"Brightness":3,"lamp2:On":1})"));
  EXPECT_EQ(sent["payload"]["metadata"]["desired"]["LightSwitch"]["timestamp"], 1796638500);
  EXPECT_EQ(sent["payload"]["metadata"]["reported"]["Brightness"]["timestamp"], 1796638200);
  EXPECT_TRUE(sent["timestamp"].is_number_integer());

  owners_->status = absl::UnavailableError("shadow down");
  auto down = Publish(DownlinkKind::kPropertiesSet, "shadow-0011aabc", "{}");
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(AlinkDownlinkTest, WhatAlinkCannotCarryIsRefusedAndHuaweiDevicesAreUnchanged) {
  for (const DownlinkKind kind : {DownlinkKind::kEventDown, DownlinkKind::kShadowResponse}) {
    auto refused = Publish(kind, "1", "{}");
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(common::FieldOf(refused.status()), "kind");
  }
  auto bad = Publish(DownlinkKind::kPropertiesSet, "1", R"({"services":{}})");
  EXPECT_EQ(common::FieldOf(bad.status()), "payload.services") << bad.status();
  auto not_json = Publish(DownlinkKind::kCommand, "1", "not json");
  EXPECT_EQ(common::FieldOf(not_json.status()), "payload") << not_json.status();
  EXPECT_TRUE(publisher_->topic.empty());

  auto huawei = service_.Publish({.tenant_id = "t",
                                  .device_id = "p1_n1",
                                  .kind = DownlinkKind::kCommand,
                                  .request_id = "42",
                                  .payload = "{}",
                                  .qos = 1,
                                  .user_topic = {}});
  ASSERT_TRUE(huawei.ok());
  EXPECT_EQ(huawei->topic, "$oc/devices/p1_n1/sys/commands/request_id=42");
  auto unknown = service_.Publish({.tenant_id = "t",
                                   .device_id = "nobody",
                                   .kind = DownlinkKind::kEventDown,
                                   .request_id = {},
                                   .payload = "{}",
                                   .qos = 1,
                                   .user_topic = {}});
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->topic, "$oc/devices/nobody/sys/events/down");

  registry_source_->status = absl::UnavailableError("thing-model down");
  auto no_registry = service_.Publish({.tenant_id = "t",
                                       .device_id = "other_device",
                                       .kind = DownlinkKind::kEventDown,
                                       .request_id = {},
                                       .payload = "{}",
                                       .qos = 1,
                                       .user_topic = {}});
  EXPECT_EQ(no_registry.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace iot::device_gateway
