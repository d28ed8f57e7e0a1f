#include "iot/thing_model/service_spec.h"

namespace iot::thing_model {

common::ServiceSpec Spec() {
  return {.name = "thing-model",
          .env_prefix = "IOT_THING_MODEL",
          .grpc_port = 50052,
          .metrics_port = 9102,
          .pg_schema = "thing_model",
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = false};
}

nlohmann::json ReadConfig(common::EnvReader& /*env*/) { return nlohmann::json::object(); }

void Wire(common::ServiceContext& /*context*/) {}

}  // namespace iot::thing_model
