#pragma once

// One platform for the end-to-end tests of the device path: Redis, Mosquitto loading the real
// iot_auth plugin with one service account, thing-model on its own test database, and the
// services a test starts on top (device-gateway, shadow, command-dispatch, rule-forwarding, in
// whatever number and wiring it needs). A test suite keeps one in a static and resets it in
// TearDownTestSuite: services stop in the reverse order of their start, then thing-model, the
// broker and Redis.
//
// What fails here (a process that does not serve, a refused RPC) throws std::runtime_error with
// the process log or gRPC error: gtest reports it as a failure of SetUpTestSuite (whose tests
// are then skipped) or of the test.

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "iot/testing/device.h"
#include "iot/testing/platform.h"
#include "iot/testing/servers.h"

namespace iot::testing {

/// What the platform is started with. The keys and the password are a test's own (a platform
/// is private to a test binary): the defaults do unless a test spells them out.
struct PlatformOptions {
  /// IOT_SECRET_KEY of thing-model, the plugin's device-secret key (64 hex).
  std::string secret_key = std::string(64, 'e');
  /// thing-model's bootstrap API key (the default tenant's admin).
  std::string admin_key = "platform-admin-key-0123456789";
  /// IOT_SERVICE_API_KEY of every service.
  std::string service_key = "platform-service-key-0123456789";
  /// The broker's one service account (ServiceAccountEntry with salt "salt"): the gateways
  /// and rule-forwarding log in with it.
  std::string service_account = "gateway";
  std::string service_password = "service-password-for-platform-tests";
  /// Appended to the broker's plugin lines (e.g. queue limits).
  std::string broker_config{};
};

/// A device added to thing-model: its id and secret.
struct RegisteredDevice {
  std::string id;
  std::string secret;
};

/// A device-gateway on the platform. Its peers are "none" (the hand-off off) unless set.
/// (Every member has a default: a test names only what it sets.)
struct GatewayOptions {
  std::string client_id{};  ///< IOT_DEVICE_GATEWAY_MQTT_CLIENT_ID
  std::string shadow = "none";
  std::string command_dispatch = "none";
  std::string rule_forwarding = "none";
  std::map<std::string, std::string> env{};  ///< more variables, e.g. a rate limit
  /// 0: a free port. Take one from FreePort() when a peer needs the gateway's address first.
  uint16_t grpc_port = 0;
};

/// A client context with `key` as bearer and a deadline `timeout` from now.
std::unique_ptr<grpc::ClientContext> BearerContext(
    const std::string& key, std::chrono::seconds timeout = std::chrono::seconds(30));

/// `127.0.0.1:port`.
std::string LoopbackAddress(uint16_t port);

class Platform {
 public:
  /// Starts Redis, the broker and thing-model, and waits for thing-model to serve.
  explicit Platform(PlatformOptions options);
  ~Platform();
  Platform(const Platform&) = delete;
  Platform& operator=(const Platform&) = delete;

  /// Starts `options.binary` with what every service takes (IOT_PG_URL: a new test database,
  /// IOT_REDIS_URL, IOT_THING_MODEL_ADDR, IOT_SERVICE_API_KEY) under `options.env`, which wins,
  /// and waits for it to serve. The platform owns it.
  ServiceProcess& StartService(ServiceProcessOptions options);
  /// A device-gateway logging in to the broker with the service account, on thing-model's
  /// database; waits for it to serve.
  ServiceProcess& StartGateway(GatewayOptions options);

  /// A client context with the admin key as bearer and a deadline `timeout` from now.
  [[nodiscard]] std::unique_ptr<grpc::ClientContext> Context(
      std::chrono::seconds timeout = std::chrono::seconds(30)) const;

  /// Creates a product (thing-model's product JSON) as the tenant of `key` (default: admin).
  void CreateProduct(const std::string& product_json, const std::string& key = {});
  /// Adds a device of `product_id` as the tenant of `key` (default: admin), its node id
  /// `node_prefix` and random hex.
  RegisteredDevice AddDevice(const std::string& product_id = "smartmeter01",
                             const std::string& key = {}, const std::string& node_prefix = "n");
  /// A device of the broker signing in with the device's credentials (not yet connected).
  std::unique_ptr<SignedDevice> Device(const RegisteredDevice& device) const;

  /// `mqtt://account:password@127.0.0.1:port`: the broker as the service account.
  [[nodiscard]] std::string ServiceMqttUrl() const;
  [[nodiscard]] const TestRedis& redis() const { return *redis_; }
  [[nodiscard]] const TestMosquitto& broker() const { return *broker_; }
  ThingModelProcess& thing_model() { return *thing_model_; }
  [[nodiscard]] const std::shared_ptr<grpc::Channel>& thing_model_channel() const {
    return thing_model_channel_;
  }
  [[nodiscard]] const PlatformOptions& options() const { return options_; }

 private:
  [[nodiscard]] const std::string& KeyOrAdmin(const std::string& key) const;

  PlatformOptions options_;
  std::unique_ptr<TestRedis> redis_;
  std::unique_ptr<TestMosquitto> broker_;
  std::unique_ptr<ThingModelProcess> thing_model_;
  std::shared_ptr<grpc::Channel> thing_model_channel_;
  std::vector<std::unique_ptr<ServiceProcess>> services_;
};

}  // namespace iot::testing
