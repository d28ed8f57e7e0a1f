#include "iot/testing/platform_fixture.h"

#include <fmt/format.h>
#include <grpcpp/create_channel.h>

#include <stdexcept>

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot::testing {
namespace {

namespace tm = iot::thing_model::v1;

void ThrowUnlessOk(const grpc::Status& status, const std::string& what) {
  if (!status.ok()) {
    throw std::runtime_error(what + ": " + status.error_message());
  }
}

}  // namespace

std::unique_ptr<grpc::ClientContext> BearerContext(const std::string& key,
                                                   std::chrono::seconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  common::SetBearer(*ctx, key);
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

std::string LoopbackAddress(uint16_t port) { return fmt::format("127.0.0.1:{}", port); }

Platform::Platform(PlatformOptions options) : options_(std::move(options)) {
  redis_ = std::make_unique<TestRedis>();
  broker_ = std::make_unique<TestMosquitto>(
      AuthPluginConfig(
          redis_->Url(), options_.secret_key,
          ServiceAccountEntry(options_.service_account, "salt", options_.service_password)) +
      options_.broker_config);
  thing_model_ = std::make_unique<ThingModelProcess>(
      ThingModelProcessOptions{.redis_url = redis_->Url(),
                               .secret_key = options_.secret_key,
                               .admin_key = options_.admin_key,
                               .service_key = options_.service_key,
                               .pg_url = {}});
  if (!thing_model_->WaitServing()) {
    throw std::runtime_error("thing-model is not serving:\n" + thing_model_->process().Log());
  }
  thing_model_channel_ =
      grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
}

Platform::~Platform() {
  while (!services_.empty()) {
    services_.pop_back();
  }
}

ServiceProcess& Platform::StartService(ServiceProcessOptions options) {
  auto& env = options.env;
  if (!env.contains("IOT_PG_URL")) {
    env["IOT_PG_URL"] = CreateTestDatabase();
  }
  env.try_emplace("IOT_REDIS_URL", redis_->Url());
  env.try_emplace("IOT_THING_MODEL_ADDR", thing_model_->address());
  env.try_emplace("IOT_SERVICE_API_KEY", options_.service_key);
  const std::string binary = options.binary;
  auto& service = *services_.emplace_back(std::make_unique<ServiceProcess>(std::move(options)));
  if (!service.WaitServing()) {
    throw std::runtime_error(binary + " is not serving:\n" + service.process().Log());
  }
  return service;
}

ServiceProcess& Platform::StartGateway(GatewayOptions options) {
  auto& env = options.env;
  env.try_emplace("IOT_MQTT_URL", ServiceMqttUrl());
  env.try_emplace("IOT_PG_URL", thing_model_->pg_url());
  env.try_emplace("IOT_SHADOW_ADDR", options.shadow);
  env.try_emplace("IOT_COMMAND_DISPATCH_ADDR", options.command_dispatch);
  env.try_emplace("IOT_RULE_FORWARDING_ADDR", options.rule_forwarding);
  env.try_emplace("IOT_DEVICE_GATEWAY_MQTT_CLIENT_ID", options.client_id);
  return StartService({.binary = "device-gateway",
                       .env_prefix = "IOT_DEVICE_GATEWAY",
                       .env = std::move(env),
                       .args = {},
                       .grpc_port = options.grpc_port});
}

std::unique_ptr<grpc::ClientContext> Platform::Context(std::chrono::seconds timeout) const {
  return BearerContext(options_.admin_key, timeout);
}

void Platform::CreateProduct(const std::string& product_json, const std::string& key) {
  tm::CreateProductRequest request;
  request.set_product_json(product_json);
  tm::Product created;
  ThrowUnlessOk(tm::Products::NewStub(thing_model_channel_)
                    ->CreateProduct(BearerContext(KeyOrAdmin(key)).get(), request, &created),
                "CreateProduct");
}

RegisteredDevice Platform::AddDevice(const std::string& product_id, const std::string& key,
                                     const std::string& node_prefix) {
  tm::AddDeviceRequest request;
  request.set_product_id(product_id);
  request.set_node_id(node_prefix + common::HexEncode(common::RandomBytes(6)));
  tm::AddDeviceResponse added;
  ThrowUnlessOk(tm::Devices::NewStub(thing_model_channel_)
                    ->AddDevice(BearerContext(KeyOrAdmin(key)).get(), request, &added),
                "AddDevice");
  return {.id = added.device().device_id(), .secret = added.secret()};
}

std::unique_ptr<SignedDevice> Platform::Device(const RegisteredDevice& device) const {
  return std::make_unique<SignedDevice>(broker_->Url(), device.id, device.secret);
}

std::string Platform::ServiceMqttUrl() const {
  return fmt::format("mqtt://{}:{}@127.0.0.1:{}", options_.service_account,
                     options_.service_password, broker_->port());
}

const std::string& Platform::KeyOrAdmin(const std::string& key) const {
  return key.empty() ? options_.admin_key : key;
}

}  // namespace iot::testing
