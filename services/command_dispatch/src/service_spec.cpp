#include "iot/command_dispatch/service_spec.h"

namespace iot::command_dispatch {

common::ServiceSpec Spec() {
  return {.name = "command-dispatch",
          .env_prefix = "IOT_COMMAND_DISPATCH",
          .grpc_port = 50053,
          .metrics_port = 9103,
          .pg_schema = "command_dispatch",
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = false};
}

nlohmann::json ReadConfig(common::EnvReader& /*env*/) { return nlohmann::json::object(); }

void Wire(common::ServiceContext& /*context*/) {}

}  // namespace iot::command_dispatch
