// Device connectivity across real processes: thing-model (gRPC, PostgreSQL, Redis projection)
// and Mosquitto with the iot_auth plugin reading that projection. A device added through the
// API connects with IoTDA signing; freezing, deleting or re-keying it takes effect at the
// broker.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <sstream>

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/common/health_client.h"
#include "iot/common/mqtt.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace pb = iot::thing_model::v1;
using iot::testing::WaitUntil;
using std::chrono::seconds;

const std::string kSecretKey(64, 'c');
const std::string kAdminKey = "connectivity-admin-key-0123456789";
const std::string kServiceKey = "connectivity-service-key-0123456789";
const std::string kGatewayPassword = "gateway-password-for-tests";

class ConnectivityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = std::make_unique<iot::testing::TestRedis>();
    broker_ = std::make_unique<iot::testing::TestMosquitto>(iot::testing::AuthPluginConfig(
        redis_->Url(), kSecretKey,
        iot::testing::ServiceAccountEntry("gateway", "salt", kGatewayPassword)));
    thing_model_ = std::make_unique<iot::testing::ThingModelProcess>(
        iot::testing::ThingModelProcessOptions{.redis_url = redis_->Url(),
                                               .secret_key = kSecretKey,
                                               .admin_key = kAdminKey,
                                               .service_key = kServiceKey,
                                               .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    const std::string& address = thing_model_->address();
    auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    products_ = pb::Products::NewStub(channel);
    devices_ = pb::Devices::NewStub(channel);

    pb::CreateProductRequest product;
    product.set_product_json(
        iot::testing::ReadTextFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    pb::Product created;
    auto ctx = Context();
    ASSERT_TRUE(products_->CreateProduct(ctx.get(), product, &created).ok());
    pb::AddDeviceRequest add;
    add.set_product_id("smartmeter01");
    add.set_node_id("n1");
    pb::AddDeviceResponse added;
    auto ctx2 = Context();
    ASSERT_TRUE(devices_->AddDevice(ctx2.get(), add, &added).ok());
    device_id_ = added.device().device_id();
    secret_ = added.secret();
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    common::SetBearer(*ctx, kAdminKey);
    ctx->set_deadline(std::chrono::system_clock::now() + seconds(10));
    return ctx;
  }

  /// A device client as Huawei's SDKs connect: sign type 0, the current hour as timestamp.
  std::unique_ptr<common::MqttClient> DeviceClient(const std::string& secret) {
    const auto signed_in = iot::testing::SignDevice(device_id_, secret);
    auto client = common::MqttClient::Create({.url = broker_->Url(),
                                              .client_id = signed_in.client_id,
                                              .username = signed_in.username,
                                              .password = signed_in.password});
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  std::unique_ptr<iot::testing::TestRedis> redis_;
  std::unique_ptr<iot::testing::TestMosquitto> broker_;
  std::unique_ptr<iot::testing::ThingModelProcess> thing_model_;
  std::unique_ptr<pb::Products::Stub> products_;
  std::unique_ptr<pb::Devices::Stub> devices_;
  std::string device_id_;
  std::string secret_;
};

TEST_F(ConnectivityTest, DeviceAddedThroughTheApiConnectsAndFreezingKicksIt) {
  auto device = DeviceClient(secret_);
  ASSERT_TRUE(device->Start().ok());
  ASSERT_TRUE(device->WaitConnected(seconds(10))) << broker_->dir();
  EXPECT_TRUE(device
                  ->Publish("$oc/devices/" + device_id_ + "/sys/properties/report",
                            R"({"services":[{"service_id":"meter","properties":{"voltage":230}}]})",
                            1)
                  .ok());

  pb::FreezeDeviceRequest freeze;
  freeze.set_device_id(device_id_);
  pb::Device frozen;
  auto ctx = Context();
  ASSERT_TRUE(devices_->FreezeDevice(ctx.get(), freeze, &frozen).ok());
  const auto frozen_at = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil([&] { return !device->connected(); }, seconds(5)))
      << "frozen device still connected";
  EXPECT_LE(std::chrono::steady_clock::now() - frozen_at, seconds(5));
  // It keeps retrying and is refused while frozen.
  EXPECT_FALSE(WaitUntil([&] { return device->connected(); }, seconds(2)));

  pb::UnfreezeDeviceRequest unfreeze;
  unfreeze.set_device_id(device_id_);
  auto ctx2 = Context();
  ASSERT_TRUE(devices_->UnfreezeDevice(ctx2.get(), unfreeze, &frozen).ok());
  EXPECT_TRUE(device->WaitConnected(seconds(20))) << "unfrozen device cannot reconnect";
}

TEST_F(ConnectivityTest, ResetSecretAndDeleteTakeEffectAtTheBroker) {
  auto device = DeviceClient(secret_);
  ASSERT_TRUE(device->Start().ok());
  ASSERT_TRUE(device->WaitConnected(seconds(10)));

  pb::ResetDeviceSecretRequest reset;
  reset.set_device_id(device_id_);
  pb::ResetDeviceSecretResponse new_secret;
  auto ctx = Context();
  ASSERT_TRUE(devices_->ResetDeviceSecret(ctx.get(), reset, &new_secret).ok());
  // New connections need the new secret; the old one is refused.
  auto stale = DeviceClient(secret_);
  ASSERT_TRUE(stale->Start().ok());
  EXPECT_FALSE(WaitUntil([&] { return stale->connected(); }, seconds(2)));
  stale->Stop();
  device->Stop();
  auto fresh = DeviceClient(new_secret.secret());
  ASSERT_TRUE(fresh->Start().ok());
  ASSERT_TRUE(fresh->WaitConnected(seconds(10)));

  pb::DeleteDeviceRequest del;
  del.set_device_id(device_id_);
  pb::DeleteDeviceResponse deleted;
  auto ctx2 = Context();
  ASSERT_TRUE(devices_->DeleteDevice(ctx2.get(), del, &deleted).ok());
  EXPECT_TRUE(WaitUntil([&] { return !fresh->connected(); }, seconds(5)))
      << "deleted device still connected";
}

TEST_F(ConnectivityTest, GatewayTurnsPresenceIntoDeviceStatusWithinASecond) {
  const uint16_t grpc_port = iot::testing::FreePort();
  iot::testing::Process gateway(
      {.argv = {iot::testing::ExecutablePath("device-gateway").string()},
       .env = {{"IOT_MQTT_URL",
                fmt::format("mqtt://gateway:{}@127.0.0.1:{}", kGatewayPassword, broker_->port())},
               {"IOT_THING_MODEL_ADDR", thing_model_->address()},
               {"IOT_REDIS_URL", redis_->Url()},
               {"IOT_PG_URL", thing_model_->pg_url()},
               // Only thing-model runs here: the other owners get nothing.
               {"IOT_SHADOW_ADDR", "none"},
               {"IOT_COMMAND_DISPATCH_ADDR", "none"},
               {"IOT_RULE_FORWARDING_ADDR", "none"},
               {"IOT_DEVICE_GATEWAY_MQTT_CLIENT_ID", "gateway-connectivity"},
               {"IOT_SERVICE_API_KEY", kServiceKey},
               {"IOT_DEVICE_GATEWAY_GRPC_PORT", std::to_string(grpc_port)},
               {"IOT_DEVICE_GATEWAY_METRICS_PORT", "0"},
               {"IOT_DEVICE_GATEWAY_LISTEN_ADDRESS", "127.0.0.1"},
               {"IOT_DEVICE_GATEWAY_PROBE_INTERVAL", "200ms"}},
       .log_file = broker_->dir() / "gateway.log",
       .run_as_user = {}});
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto health = common::CheckHealth("127.0.0.1:" + std::to_string(grpc_port));
        return health.ok() && *health;
      },
      seconds(60)))
      << gateway.Log();

  auto status = [&] {
    pb::ShowDeviceRequest request;
    request.set_device_id(device_id_);
    pb::Device device;
    auto ctx = Context();
    EXPECT_TRUE(devices_->ShowDevice(ctx.get(), request, &device).ok());
    return device.status();
  };
  EXPECT_EQ(status(), pb::INACTIVE);
  auto device = DeviceClient(secret_);
  ASSERT_TRUE(device->Start().ok());
  ASSERT_TRUE(device->WaitConnected(seconds(10)));
  EXPECT_TRUE(WaitUntil([&] { return status() == pb::ONLINE; }, seconds(1))) << gateway.Log();
  device->Stop();
  EXPECT_TRUE(WaitUntil([&] { return status() == pb::OFFLINE; }, seconds(1))) << gateway.Log();
  EXPECT_EQ(gateway.Stop(), 0) << gateway.Log();
}

}  // namespace
}  // namespace iot
