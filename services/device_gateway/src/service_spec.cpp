#include "iot/device_gateway/service_spec.h"

#include "iot/common/logging.h"
#include "iot/common/mqtt.h"
#include "iot/device_gateway/presence.h"

namespace iot::device_gateway {

common::ServiceSpec Spec() {
  return {.name = "device-gateway",
          .env_prefix = "IOT_DEVICE_GATEWAY",
          .grpc_port = 50051,
          .metrics_port = 9101,
          .pg_schema = "",
          .migrations = nullptr,
          .uses_redis = false,
          .uses_mqtt = true};
}

nlohmann::json ReadConfig(common::EnvReader& env) {
  nlohmann::json settings;
  settings["thing_model_addr"] = env.String("IOT_THING_MODEL_ADDR", "127.0.0.1:50052");
  settings["service_api_key"] = env.Required("IOT_SERVICE_API_KEY");
  return settings;
}

void Wire(common::ServiceContext& context) {
  auto presence = std::make_shared<PresenceForwarder>(
      MakeThingModelStatusSink(context.settings["thing_model_addr"],
                               context.settings["service_api_key"]),
      context.host.metrics());
  // Every replica sees every presence event: mosquitto 2.0.11 never delivers `$` topics to
  // shared subscriptions. thing-model applies them idempotently (by event time).
  if (absl::Status s = context.mqtt->Subscribe("$iot/presence/+", 1); !s.ok()) {
    throw common::ConfigError("subscribe $iot/presence/+: " + std::string(s.message()));
  }
  context.mqtt->SetMessageHandler([presence](const common::MqttMessage& message) {
    auto event = ParsePresence(message.topic, message.payload);
    if (!event.ok()) {
      presence->Reject(message.topic, event.status());
      return;
    }
    if (!presence->Submit(*std::move(event))) {
      presence->Reject(message.topic, absl::UnavailableError("gateway shutting down"));
    }
  });
  context.host.OnShutdown([presence] { presence->Stop(); });
}

}  // namespace iot::device_gateway
