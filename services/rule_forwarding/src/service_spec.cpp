#include "iot/rule_forwarding/service_spec.h"

namespace iot::rule_forwarding {

common::ServiceSpec Spec() {
  return {.name = "rule-forwarding",
          .env_prefix = "IOT_RULE_FORWARDING",
          .grpc_port = 50055,
          .metrics_port = 9105,
          .pg_schema = "rule_forwarding",
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = false};
}

nlohmann::json ReadConfig(common::EnvReader& /*env*/) { return nlohmann::json::object(); }

void Wire(common::ServiceContext& /*context*/) {}

}  // namespace iot::rule_forwarding
