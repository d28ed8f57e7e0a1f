// command-dispatch end to end: a signed device (MQTT, IoTDA protocol) of a real Mosquitto with
// the iot_auth plugin, a real device-gateway carrying downlinks, device responses and presence,
// real thing-model and command-dispatch on PostgreSQL and Redis.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/testing/device.h"
#include "iot/testing/platform.h"
#include "iot/testing/platform_fixture.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot {
namespace {

namespace cd = iot::command_dispatch::v1;
using iot::testing::WaitUntil;
using nlohmann::json;
using std::chrono::seconds;

/// Answers commands and property sets/gets as a device would.
void Answer(iot::testing::SignedDevice& device, const common::MqttMessage& m) {
  const std::string base = "$oc/devices/" + device.id() + "/sys/";
  const std::string id = m.topic.substr(m.topic.rfind('=') + 1);
  if (m.topic.starts_with(base + "commands/request_id=")) {
    const json command = json::parse(m.payload);
    device.Publish("commands/response/request_id=" + id,
                   {{"result_code", 0},
                    {"response_name", command["command_name"].get<std::string>() + "_response"},
                    {"paras", {{"result", "done"}}}});
  } else if (m.topic.starts_with(base + "properties/set/request_id=")) {
    device.Publish("properties/set/response/request_id=" + id,
                   {{"result_code", 0}, {"result_desc", "success"}});
  } else if (m.topic.starts_with(base + "properties/get/request_id=")) {
    device.Publish("properties/get/response/request_id=" + id,
                   {{"services", {{{"service_id", "meter"}, {"properties", {{"voltage", 229}}}}}}});
  }
}

class CommandMqttTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    platform_ = std::make_unique<iot::testing::Platform>(iot::testing::PlatformOptions{});
    platform_->CreateProduct(
        iot::testing::ReadTextFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));

    // Two replicas, each with its own gateway; each needs the other's address, so the gateways'
    // ports are chosen first. The gateways split the uplink partitions, so a device's response
    // reaches the replica of the gateway holding its partition.
    const std::string pg_url = iot::testing::CreateTestDatabase();
    for (size_t i = 0; i < 2; ++i) {
      const uint16_t gateway_port = iot::testing::FreePort();
      dispatch_[i] = &platform_->StartService(
          {.binary = "command-dispatch",
           .env_prefix = "IOT_COMMAND_DISPATCH",
           .env = {{"IOT_PG_URL", pg_url},
                   {"IOT_DEVICE_GATEWAY_ADDR", iot::testing::LoopbackAddress(gateway_port)}},
           .args = {}});
      gateway_[i] = &platform_->StartGateway({.client_id = fmt::format("gw-command-e2e-{}", i),
                                              .command_dispatch = dispatch_[i]->address(),
                                              .grpc_port = gateway_port});
    }
    commands_ = cd::Commands::NewStub(
        grpc::CreateChannel(dispatch_[0]->address(), grpc::InsecureChannelCredentials()));
  }

  static void TearDownTestSuite() { platform_.reset(); }

  static std::unique_ptr<grpc::ClientContext> Context() { return platform_->Context(); }

  void SetUp() override {
    const iot::testing::RegisteredDevice added = platform_->AddDevice();
    device_id_ = added.id;
    device_ = platform_->Device(added);
    device_->SetResponder(Answer);
  }

  std::string Diagnostics() {
    return gateway_[0]->process().Log() + "\n" + gateway_[1]->process().Log() + "\n" +
           dispatch_[0]->process().Log();
  }

  static inline std::unique_ptr<iot::testing::Platform> platform_;
  static inline iot::testing::ServiceProcess* dispatch_[2] = {};
  static inline iot::testing::ServiceProcess* gateway_[2] = {};
  static inline std::unique_ptr<cd::Commands::Stub> commands_;

  std::string device_id_;
  std::unique_ptr<iot::testing::SignedDevice> device_;
};

TEST_F(CommandMqttTest, CommandAndPropertiesRoundTripThroughTheBroker) {
  ASSERT_TRUE(device_->Connect());
  cd::CreateCommandRequest command;
  command.set_device_id(device_id_);
  command.set_service_id("meter");
  command.set_command_name("reboot");
  command.set_paras_json(R"({"delay":3})");
  command.set_timeout(10);
  cd::CreateCommandResponse answered;
  // The gateway learns of the connect from the broker's presence event, just after CONNACK.
  grpc::Status s;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto ctx = Context();
        s = commands_->CreateCommand(ctx.get(), command, &answered);
        return s.error_code() != grpc::StatusCode::FAILED_PRECONDITION;
      },
      seconds(10)));
  ASSERT_TRUE(s.ok()) << s.error_message() << Diagnostics();
  EXPECT_EQ(json::parse(answered.response_json())["response_name"], "reboot_response");
  const auto received = device_->Await("commands/request_id=");
  ASSERT_TRUE(received.has_value());
  EXPECT_EQ(received->topic, fmt::format("$oc/devices/{}/sys/commands/request_id={}", device_id_,
                                         answered.command_id()));
  EXPECT_EQ(json::parse(received->payload)["paras"]["delay"], 3);

  cd::UpdatePropertiesRequest set;
  set.set_device_id(device_id_);
  set.set_services_json(
      R"({"services":[{"service_id":"meter","properties":{"relay_state":"OFF"}}]})");
  cd::UpdatePropertiesResponse set_answer;
  auto ctx = Context();
  s = commands_->UpdateProperties(ctx.get(), set, &set_answer);
  ASSERT_TRUE(s.ok()) << s.error_message() << Diagnostics();
  EXPECT_EQ(json::parse(set_answer.response_json())["result_desc"], "success");

  cd::ListPropertiesRequest get;
  get.set_device_id(device_id_);
  get.set_service_id("meter");
  cd::ListPropertiesResponse got;
  auto ctx2 = Context();
  s = commands_->ListProperties(ctx2.get(), get, &got);
  ASSERT_TRUE(s.ok()) << s.error_message() << Diagnostics();
  EXPECT_EQ(json::parse(got.response_json())["services"][0]["properties"]["voltage"], 229);
}

TEST_F(CommandMqttTest, ResponsesThroughEitherGatewayReachTheWaitingReplica) {
  ASSERT_TRUE(device_->Connect());
  cd::CreateCommandRequest command;
  command.set_device_id(device_id_);
  command.set_service_id("meter");
  command.set_command_name("reboot");
  command.set_timeout(10);
  // The device's uplink partition is consumed by one of the two gateways (broker/README.md,
  // Uplink), each handing responses to its own command-dispatch replica. Calls alternate
  // between the replicas, so half of them wait on the replica the response does not come to,
  // which must forward it.
  std::unique_ptr<cd::Commands::Stub> replica[2] = {
      cd::Commands::NewStub(
          grpc::CreateChannel(dispatch_[0]->address(), grpc::InsecureChannelCredentials())),
      cd::Commands::NewStub(
          grpc::CreateChannel(dispatch_[1]->address(), grpc::InsecureChannelCredentials()))};
  for (int i = 0; i < 8; ++i) {
    cd::CreateCommandResponse answered;
    grpc::Status s;
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto ctx = Context();
          s = replica[i % 2]->CreateCommand(ctx.get(), command, &answered);
          return s.error_code() != grpc::StatusCode::FAILED_PRECONDITION;
        },
        seconds(10)));
    ASSERT_TRUE(s.ok()) << s.error_message() << Diagnostics();
    EXPECT_EQ(json::parse(answered.response_json())["paras"]["result"], "done");
  }
  const std::string forwarded = R"(iot_command_dispatch_responses_total{route="forwarded"})";
  EXPECT_TRUE(dispatch_[0]->Metrics().find(forwarded) != std::string::npos ||
              dispatch_[1]->Metrics().find(forwarded) != std::string::npos)
      << "no response was forwarded to the waiting replica";
}

TEST_F(CommandMqttTest, MessagesAndDelayedCommandsReachTheDeviceWhenItConnects) {
  cd::CreateCommandRequest command;
  command.set_device_id(device_id_);
  command.set_service_id("meter");
  command.set_command_name("reboot");
  cd::CreateCommandResponse answered;
  auto ctx = Context();
  EXPECT_EQ(commands_->CreateCommand(ctx.get(), command, &answered).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION)
      << "never connected: offline";

  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    cd::CreateMessageRequest message;
    message.set_device_id(device_id_);
    message.set_name("note");
    message.set_message_json(fmt::format(R"({{"n":{}}})", i));
    cd::CreateMessageResponse created;
    auto c = Context();
    ASSERT_TRUE(commands_->CreateMessage(c.get(), message, &created).ok());
    EXPECT_EQ(created.result().status(), "PENDING");
    ids.push_back(created.message_id());
  }
  cd::CreateAsyncCommandRequest async;
  async.set_device_id(device_id_);
  async.set_service_id("meter");
  async.set_command_name("reboot");
  async.set_send_strategy("delay");
  cd::AsyncDeviceCommand queued;
  auto c = Context();
  ASSERT_TRUE(commands_->CreateAsyncCommand(c.get(), async, &queued).ok());
  EXPECT_EQ(queued.status(), "PENDING");

  ASSERT_TRUE(device_->Connect());
  auto second = device_->Await("messages/down", 1);
  ASSERT_TRUE(second.has_value()) << Diagnostics();
  const auto messages = device_->Received("messages/down");
  ASSERT_EQ(messages.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const json body = json::parse(messages[i].payload);
    EXPECT_EQ(body["id"], ids[i]);
    EXPECT_EQ(body["content"]["n"], i);
  }
  ASSERT_TRUE(device_->Await("commands/request_id=" + queued.command_id()).has_value());
  cd::ShowAsyncDeviceCommandRequest show;
  show.set_device_id(device_id_);
  show.set_command_id(queued.command_id());
  EXPECT_TRUE(WaitUntil(
      [&] {
        cd::AsyncDeviceCommand shown;
        auto x = Context();
        return commands_->ShowAsyncDeviceCommand(x.get(), show, &shown).ok() &&
               shown.status() == "SUCCESSFUL";
      },
      seconds(10)))
      << Diagnostics();
}

}  // namespace
}  // namespace iot
