// The shadow end to end: devices are MQTT clients (IoTDA signing, never subscribing) of a real
// Mosquitto with the iot_auth plugin; a real device-gateway hands their reports, presence,
// property-set responses and shadow gets to a real shadow service, whose delta pushes go back
// through the gateway's InternalDownlink to the device. thing-model, PostgreSQL and Redis are
// real too.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/common/mqtt.h"
#include "iot/common/redis.h"
#include "iot/shadow/redis_live_store.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace tm = iot::thing_model::v1;
namespace sh = iot::shadow::v1;
using iot::testing::WaitUntil;
using nlohmann::json;
using std::chrono::seconds;

const std::string kSecretKey(64, 'e');
const std::string kAdminKey = "shadow-e2e-admin-key-0123456789";
const std::string kServiceKey = "shadow-e2e-service-key-0123456789";
const std::string kGatewayPassword = "gateway-password-for-shadow-tests";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string HourStamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  return fmt::format("{:04d}{:02d}{:02d}{:02d}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour);
}

std::unique_ptr<grpc::ClientContext> Context(const std::string& key) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  common::SetBearer(*ctx, key);
  ctx->set_deadline(std::chrono::system_clock::now() + seconds(10));
  return ctx;
}

/// A device as Huawei's SDKs connect it, collecting what the platform sends it.
class Device {
 public:
  Device(const std::string& broker_url, const std::string& id, const std::string& secret)
      : id_(id) {
    const std::string stamp = HourStamp();
    auto client = common::MqttClient::Create({.url = broker_url,
                                              .client_id = fmt::format("{}_0_0_{}", id, stamp),
                                              .username = id,
                                              .password = common::HmacSha256Hex(stamp, secret)});
    EXPECT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    client_->SetMessageHandler([this](const common::MqttMessage& m) {
      std::lock_guard lock(mu_);
      inbox_.push_back(m);
    });
  }

  // The client's thread writes the inbox: stop it before the members it uses go (they are
  // destroyed before client_, which is declared first).
  ~Device() { client_->Stop(); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  bool Connect() { return client_->Start().ok() && client_->WaitConnected(seconds(10)); }
  void Disconnect() { client_->Stop(); }

  void Publish(const std::string& suffix, const json& payload) {
    auto rc = client_->PublishAndWait("$oc/devices/" + id_ + "/sys/" + suffix, payload.dump(), 1,
                                      seconds(10));
    ASSERT_TRUE(rc.ok()) << rc.status();
    ASSERT_LT(*rc, 0x80) << suffix;
  }

  /// Waits for a message whose topic starts with `$oc/devices/{id}/sys/{prefix}`.
  std::optional<common::MqttMessage> Await(const std::string& prefix, size_t nth = 0) {
    const std::string want = "$oc/devices/" + id_ + "/sys/" + prefix;
    std::optional<common::MqttMessage> found;
    WaitUntil(
        [&] {
          std::lock_guard lock(mu_);
          size_t seen = 0;
          for (const auto& m : inbox_) {
            if (m.topic.starts_with(want) && seen++ == nth) {
              found = m;
              return true;
            }
          }
          return false;
        },
        seconds(10));
    return found;
  }

  size_t Count(const std::string& prefix) {
    const std::string want = "$oc/devices/" + id_ + "/sys/" + prefix;
    std::lock_guard lock(mu_);
    return static_cast<size_t>(std::count_if(
        inbox_.begin(), inbox_.end(), [&](const auto& m) { return m.topic.starts_with(want); }));
  }

 private:
  std::string id_;
  std::unique_ptr<common::MqttClient> client_;
  std::mutex mu_;
  std::vector<common::MqttMessage> inbox_;
};

class ShadowMqttTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = std::make_unique<iot::testing::TestRedis>();
    // The delivery settings of deploy/mosquitto/mosquitto.conf: mosquitto's default
    // max_queued_messages (1000) drops what it queues for a gateway that falls behind.
    broker_ = std::make_unique<iot::testing::TestMosquitto>(
        iot::testing::AuthPluginConfig(
            redis_->Url(), kSecretKey,
            iot::testing::ServiceAccountEntry("gateway", "salt", kGatewayPassword)) +
        "\nmax_queued_messages 1000000\nmax_queued_bytes 536870912\n");
    thing_model_ = std::make_unique<iot::testing::ThingModelProcess>(
        iot::testing::ThingModelProcessOptions{.redis_url = redis_->Url(),
                                               .secret_key = kSecretKey,
                                               .admin_key = kAdminKey,
                                               .service_key = kServiceKey,
                                               .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    tm_channel_ = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
    tm::CreateProductRequest product;
    product.set_product_json(ReadFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    tm::Product created;
    auto ctx = Context(kAdminKey);
    ASSERT_TRUE(
        tm::Products::NewStub(tm_channel_)->CreateProduct(ctx.get(), product, &created).ok());

    // Each needs the other's address: the gateway's port is chosen first.
    const uint16_t gateway_port = iot::testing::FreePort();
    shadow_ = std::make_unique<iot::testing::ServiceProcess>(iot::testing::ServiceProcessOptions{
        .binary = "shadow",
        .env_prefix = "IOT_SHADOW",
        .env = {{"IOT_PG_URL", iot::testing::CreateTestDatabase()},
                {"IOT_REDIS_URL", redis_->Url()},
                {"IOT_THING_MODEL_ADDR", thing_model_->address()},
                {"IOT_DEVICE_GATEWAY_ADDR", fmt::format("127.0.0.1:{}", gateway_port)},
                {"IOT_SERVICE_API_KEY", kServiceKey}},
        .args = {}});
    ASSERT_TRUE(shadow_->WaitServing()) << shadow_->process().Log();
    gateway_ = std::make_unique<iot::testing::ServiceProcess>(iot::testing::ServiceProcessOptions{
        .binary = "device-gateway",
        .env_prefix = "IOT_DEVICE_GATEWAY",
        .env = {{"IOT_MQTT_URL",
                 fmt::format("mqtt://gateway:{}@127.0.0.1:{}", kGatewayPassword, broker_->port())},
                {"IOT_REDIS_URL", redis_->Url()},
                {"IOT_PG_URL", thing_model_->pg_url()},
                {"IOT_THING_MODEL_ADDR", thing_model_->address()},
                {"IOT_SHADOW_ADDR", shadow_->address()},
                {"IOT_COMMAND_DISPATCH_ADDR", "none"},
                {"IOT_RULE_FORWARDING_ADDR", "none"},
                {"IOT_SERVICE_API_KEY", kServiceKey},
                {"IOT_DEVICE_GATEWAY_MQTT_CLIENT_ID", "gw-shadow-e2e"},
                {"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"}},
        .args = {},
        .grpc_port = gateway_port});
    ASSERT_TRUE(gateway_->WaitServing()) << gateway_->process().Log();
    shadow_channel_ = grpc::CreateChannel(shadow_->address(), grpc::InsecureChannelCredentials());
  }

  static void TearDownTestSuite() {
    gateway_.reset();
    shadow_.reset();
    thing_model_.reset();
    broker_.reset();
    redis_.reset();
  }

  void SetUp() override {
    shadows_ = sh::Shadows::NewStub(shadow_channel_);
    tm::AddDeviceRequest add;
    add.set_product_id("smartmeter01");
    add.set_node_id("n" + common::HexEncode(common::RandomBytes(6)));
    tm::AddDeviceResponse added;
    auto ctx = Context(kAdminKey);
    ASSERT_TRUE(tm::Devices::NewStub(tm_channel_)->AddDevice(ctx.get(), add, &added).ok());
    device_id_ = added.device().device_id();
    device_ = std::make_unique<Device>(broker_->Url(), device_id_, added.secret());
  }

  sh::ShowDeviceShadowResponse Show() {
    sh::ShowDeviceShadowRequest request;
    request.set_device_id(device_id_);
    sh::ShowDeviceShadowResponse response;
    auto ctx = Context(kAdminKey);
    const grpc::Status status = shadows_->ShowDeviceShadow(ctx.get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  json Reported() { return json::parse(Show().shadow(0).reported().properties_json()); }

  int64_t Version(const std::string& device_id) {
    sh::ShowDeviceShadowRequest request;
    request.set_device_id(device_id);
    sh::ShowDeviceShadowResponse response;
    auto ctx = Context(kAdminKey);
    return shadows_->ShowDeviceShadow(ctx.get(), request, &response).ok() ? response.version() : -1;
  }

  grpc::Status SetDesired(const json& desired) {
    sh::UpdateDeviceShadowDesiredDataRequest request;
    request.set_device_id(device_id_);
    request.add_shadow()->set_service_id("meter");
    request.mutable_shadow(0)->set_desired_json(desired.dump());
    sh::ShowDeviceShadowResponse response;
    auto ctx = Context(kAdminKey);
    return shadows_->UpdateDeviceShadowDesiredData(ctx.get(), request, &response);
  }

  static json Report(const json& properties) {
    return {{"services", {{{"service_id", "meter"}, {"properties", properties}}}}};
  }

  static inline std::unique_ptr<iot::testing::TestRedis> redis_;
  static inline std::unique_ptr<iot::testing::TestMosquitto> broker_;
  static inline std::unique_ptr<iot::testing::ThingModelProcess> thing_model_;
  static inline std::shared_ptr<grpc::Channel> tm_channel_;
  static inline std::unique_ptr<iot::testing::ServiceProcess> shadow_;
  static inline std::unique_ptr<iot::testing::ServiceProcess> gateway_;
  static inline std::shared_ptr<grpc::Channel> shadow_channel_;

  std::unique_ptr<sh::Shadows::Stub> shadows_;
  std::string device_id_;
  std::unique_ptr<Device> device_;
};

TEST_F(ShadowMqttTest, ReportedOverMqttDesiredPushedAndCaughtUp) {
  ASSERT_TRUE(device_->Connect());
  device_->Publish("properties/report", Report({{"voltage", 230}, {"relay_state", "ON"}}));
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
  device_->Publish("properties/set/response/request_id=" + request_id,
                   {{"result_code", 0}, {"result_desc", "success"}});
  device_->Publish("properties/report", Report({{"relay_state", "OFF"}, {"report_interval", 30}}));
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
  device_->Publish("properties/report", {{"services",
                                          {{{"service_id", "meter"},
                                            {"properties", {{"voltage", 231}}},
                                            {"event_time", "20261126T174248Z"}}}}});
  ASSERT_TRUE(WaitUntil([&] { return Reported().contains("voltage"); }, seconds(10)));
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}}).ok());
  device_->Publish("shadow/get/request_id=get-1",
                   {{"object_device_id", device_id_}, {"service_id", "meter"}});
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
  std::vector<std::pair<std::string, std::unique_ptr<Device>>> devices;
  auto devices_stub = tm::Devices::NewStub(tm_channel_);
  for (int d = 0; d < kDevices; ++d) {
    tm::AddDeviceRequest add;
    add.set_product_id("smartmeter01");
    add.set_node_id("rate" + common::HexEncode(common::RandomBytes(6)));
    tm::AddDeviceResponse added;
    auto ctx = Context(kAdminKey);
    ASSERT_TRUE(devices_stub->AddDevice(ctx.get(), add, &added).ok());
    auto device =
        std::make_unique<Device>(broker_->Url(), added.device().device_id(), added.secret());
    ASSERT_TRUE(device->Connect());
    devices.emplace_back(added.device().device_id(), std::move(device));
  }
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kReports; ++i) {
    for (auto& [id, device] : devices) {
      device->Publish("properties/report", Report({{"voltage", i}}));
    }
  }
  for (auto& [id, device] : devices) {
    EXPECT_TRUE(WaitUntil([&] { return Version(id) == kReports; }, seconds(60)))
        << id << " at version " << Version(id) << "\n"
        << gateway_->process().Log();
  }
  const double mqtt_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  auto redis = common::RedisClient::Create({.url = redis_->Url()});
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
