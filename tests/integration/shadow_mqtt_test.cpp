// The shadow end to end: devices are MQTT clients (IoTDA signing, never subscribing) of a real
// Mosquitto with the iot_auth plugin; a real device-gateway hands their reports, presence,
// property-set responses and shadow gets to a real shadow service, whose delta pushes go back
// through the gateway's InternalDownlink to the device. thing-model, PostgreSQL and Redis are
// real too.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "iot/common/redis.h"
#include "iot/shadow/redis_live_store.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"
#include "iot/testing/device.h"
#include "iot/testing/platform.h"
#include "iot/testing/platform_fixture.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot {
namespace {

namespace sh = iot::shadow::v1;
using iot::testing::WaitUntil;
using nlohmann::json;
using std::chrono::seconds;

class ShadowMqttTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The delivery settings of deploy/mosquitto/mosquitto.conf: mosquitto's default
    // max_queued_messages (1000) drops what it queues for a gateway that falls behind.
    platform_ = std::make_unique<iot::testing::Platform>(iot::testing::PlatformOptions{
        .broker_config = "\nmax_queued_messages 1000000\nmax_queued_bytes 536870912\n"});
    platform_->CreateProduct(
        iot::testing::ReadTextFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));

    // Each needs the other's address: the gateway's port is chosen first.
    const uint16_t gateway_port = iot::testing::FreePort();
    shadow_ = &platform_->StartService(
        {.binary = "shadow",
         .env_prefix = "IOT_SHADOW",
         .env = {{"IOT_DEVICE_GATEWAY_ADDR", iot::testing::LoopbackAddress(gateway_port)}},
         .args = {}});
    gateway_ = &platform_->StartGateway({.client_id = "gw-shadow-e2e",
                                         .shadow = shadow_->address(),
                                         .env = {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"}},
                                         .grpc_port = gateway_port});
    shadow_channel_ = grpc::CreateChannel(shadow_->address(), grpc::InsecureChannelCredentials());
  }

  static void TearDownTestSuite() { platform_.reset(); }

  void SetUp() override {
    shadows_ = sh::Shadows::NewStub(shadow_channel_);
    const iot::testing::RegisteredDevice added = platform_->AddDevice();
    device_id_ = added.id;
    device_ = platform_->Device(added);
  }

  sh::ShowDeviceShadowResponse Show() {
    sh::ShowDeviceShadowRequest request;
    request.set_device_id(device_id_);
    sh::ShowDeviceShadowResponse response;
    auto ctx = platform_->Context(seconds(10));
    const grpc::Status status = shadows_->ShowDeviceShadow(ctx.get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  json Reported() { return json::parse(Show().shadow(0).reported().properties_json()); }

  int64_t Version(const std::string& device_id) {
    sh::ShowDeviceShadowRequest request;
    request.set_device_id(device_id);
    sh::ShowDeviceShadowResponse response;
    auto ctx = platform_->Context(seconds(10));
    return shadows_->ShowDeviceShadow(ctx.get(), request, &response).ok() ? response.version() : -1;
  }

  grpc::Status SetDesired(const json& desired) {
    sh::UpdateDeviceShadowDesiredDataRequest request;
    request.set_device_id(device_id_);
    request.add_shadow()->set_service_id("meter");
    request.mutable_shadow(0)->set_desired_json(desired.dump());
    sh::ShowDeviceShadowResponse response;
    auto ctx = platform_->Context(seconds(10));
    return shadows_->UpdateDeviceShadowDesiredData(ctx.get(), request, &response);
  }

  static json Report(const json& properties) {
    return {{"services", {{{"service_id", "meter"}, {"properties", properties}}}}};
  }

  static inline std::unique_ptr<iot::testing::Platform> platform_;
  static inline iot::testing::ServiceProcess* shadow_ = nullptr;
  static inline iot::testing::ServiceProcess* gateway_ = nullptr;
  static inline std::shared_ptr<grpc::Channel> shadow_channel_;

  std::unique_ptr<sh::Shadows::Stub> shadows_;
  std::string device_id_;
  std::unique_ptr<iot::testing::SignedDevice> device_;
};

TEST_F(ShadowMqttTest, ReportedOverMqttDesiredPushedAndCaughtUp) {
  ASSERT_TRUE(device_->Connect());
  ASSERT_TRUE(device_->PublishAcked("properties/report",
                                    Report({{"voltage", 230}, {"relay_state", "ON"}})));
  EXPECT_TRUE(WaitUntil([&] { return Reported().contains("voltage"); }, seconds(10)))
      << gateway_->process().Log();
  EXPECT_EQ(Reported(), json({{"voltage", 230}, {"relay_state", "ON"}}));

  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}, {"report_interval", 30}}).ok());
  auto set = device_->Await("properties/set/request_id=");
  ASSERT_TRUE(set.has_value()) << "no property set reached the device\n"
                               << gateway_->process().Log();
  const std::string prefix = "$oc/devices/" + device_id_ + "/sys/properties/set/request_id=";
  const std::string request_id = set->topic.substr(prefix.size());
  EXPECT_TRUE(request_id.starts_with("shadow-")) << set->topic;
  EXPECT_EQ(json::parse(set->payload),
            json({{"object_device_id", device_id_},
                  {"services",
                   {{{"service_id", "meter"},
                     {"properties", {{"relay_state", "OFF"}, {"report_interval", 30}}}}}}}));

  // The device answers and reports the new state: the answer is recorded, the delta empties.
  ASSERT_TRUE(device_->PublishAcked("properties/set/response/request_id=" + request_id,
                                    {{"result_code", 0}, {"result_desc", "success"}}));
  ASSERT_TRUE(device_->PublishAcked("properties/report",
                                    Report({{"relay_state", "OFF"}, {"report_interval", 30}})));
  EXPECT_TRUE(WaitUntil(
      [&] {
        const auto shown = Show();
        return shown.last_property_set().request_id() == request_id &&
               json::parse(shown.shadow(0).delta_json()).empty();
      },
      seconds(10)))
      << Show().DebugString();
}

TEST_F(ShadowMqttTest, OfflineDeviceReceivesTheDeltaWhenItConnects) {
  ASSERT_TRUE(SetDesired({{"report_interval", 120}}).ok());
  ASSERT_TRUE(device_->Connect());
  auto set = device_->Await("properties/set/request_id=shadow-");
  ASSERT_TRUE(set.has_value()) << "pending delta not pushed on connect\n"
                               << gateway_->process().Log();
  EXPECT_EQ(json::parse(set->payload)["services"][0]["properties"],
            json({{"report_interval", 120}}));
}

TEST_F(ShadowMqttTest, DeviceShadowGetIsAnsweredOverMqtt) {
  ASSERT_TRUE(device_->Connect());
  ASSERT_TRUE(
      device_->PublishAcked("properties/report", {{"services",
                                                   {{{"service_id", "meter"},
                                                     {"properties", {{"voltage", 231}}},
                                                     {"event_time", "20261126T174248Z"}}}}}));
  ASSERT_TRUE(WaitUntil([&] { return Reported().contains("voltage"); }, seconds(10)));
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}}).ok());
  ASSERT_TRUE(device_->PublishAcked("shadow/get/request_id=get-1",
                                    {{"object_device_id", device_id_}, {"service_id", "meter"}}));
  auto response = device_->Await("shadow/get/response/request_id=get-1");
  ASSERT_TRUE(response.has_value()) << gateway_->process().Log();
  const json body = json::parse(response->payload);
  EXPECT_EQ(body["object_device_id"], device_id_);
  ASSERT_EQ(body["shadow"].size(), 1U);
  EXPECT_EQ(body["shadow"][0]["service_id"], "meter");
  EXPECT_EQ(body["shadow"][0]["reported"]["properties"], json({{"voltage", 231}}));
  EXPECT_EQ(body["shadow"][0]["reported"]["event_time"], "20261126T174248Z");
  EXPECT_EQ(body["shadow"][0]["desired"]["properties"], json({{"relay_state", "OFF"}}));
  EXPECT_EQ(body["shadow"][0]["version"], Show().version());
}

// Not a benchmark with a bound (timings are never asserted): every report sent over MQTT must
// be merged (versions count them); the end-to-end merge rate and, for comparison, a bare Redis
// EVALSHA loop of the same merge script on the same Redis are printed for the record.
TEST_F(ShadowMqttTest, EveryReportOverMqttIsMergedAndTheRateIsPrinted) {
  constexpr int kDevices = 10;
  constexpr int kReports = 300;
  std::vector<std::pair<std::string, std::unique_ptr<iot::testing::SignedDevice>>> devices;
  for (int d = 0; d < kDevices; ++d) {
    const iot::testing::RegisteredDevice added = platform_->AddDevice("smartmeter01", {}, "rate");
    auto device = platform_->Device(added);
    ASSERT_TRUE(device->Connect());
    devices.emplace_back(added.id, std::move(device));
  }
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kReports; ++i) {
    for (auto& [id, device] : devices) {
      ASSERT_TRUE(device->PublishAcked("properties/report", Report({{"voltage", i}})));
    }
  }
  for (const auto& entry : devices) {
    const std::string& id = entry.first;  // (clang 14 lambdas cannot capture a binding)
    EXPECT_TRUE(WaitUntil([&] { return Version(id) == kReports; }, seconds(60)))
        << id << " at version " << Version(id) << "\n"
        << gateway_->process().Log();
  }
  const double mqtt_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  auto redis = common::RedisClient::Create({.url = platform_->redis().Url()});
  ASSERT_TRUE(redis.ok());
  auto sha = (*redis)->Command({"SCRIPT", "LOAD", shadow::RedisLiveStore::MergeScript()});
  ASSERT_TRUE(sha.ok());
  const auto bare_start = std::chrono::steady_clock::now();
  for (int i = 0; i < kDevices * kReports; ++i) {
    shadow::LiveStore::ReportWrite write{
        .device_id = fmt::format("bare-{}", i % kDevices),
        .tenant_id = "bench",
        .message_id = fmt::format("bare-{}", i),
        .fields = {{shadow::PropertyField('r', "meter", "voltage"),
                    shadow::Stamp(shadow::NowMs(), std::to_string(i))}}};
    auto reply = (*redis)->Command(
        shadow::RedisLiveStore::MergeArgs(sha->str, write, 64 * 1024, shadow::NowMs(), 64));
    ASSERT_TRUE(reply.ok() && !reply->is_error());
  }
  const double bare_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - bare_start).count();
  const double total = kDevices * kReports;
  std::printf(
      "[ shadow rate ] %.0f reports from %d devices over MQTT merged in %.2f s: %.0f merges/s; "
      "bare EVALSHA loop: %.0f merges/s; ratio %.2f\n",
      total, kDevices, mqtt_s, total / mqtt_s, total / bare_s, bare_s / mqtt_s);
}

}  // namespace
}  // namespace iot
