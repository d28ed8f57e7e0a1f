#include "iot/device_gateway/service_spec.h"

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

nlohmann::json ReadConfig(common::EnvReader& /*env*/) { return nlohmann::json::object(); }

void Wire(common::ServiceContext& /*context*/) {}

}  // namespace iot::device_gateway
