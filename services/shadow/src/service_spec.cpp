#include "iot/shadow/service_spec.h"

namespace iot::shadow {

common::ServiceSpec Spec() {
  return {.name = "shadow",
          .env_prefix = "IOT_SHADOW",
          .grpc_port = 50054,
          .metrics_port = 9104,
          .pg_schema = "shadow",
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = false};
}

nlohmann::json ReadConfig(common::EnvReader& /*env*/) { return nlohmann::json::object(); }

void Wire(common::ServiceContext& /*context*/) {}

}  // namespace iot::shadow
