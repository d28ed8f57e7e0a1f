#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"

/// thing-model: tenants and API keys, products and thing models, device registry.
namespace iot::thing_model {

/// Name, ports, env prefix and backends of the thing-model process.
common::ServiceSpec Spec();
/// The service's own settings (IOT_THING_MODEL_*), as JSON for the start-up log line.
nlohmann::json ReadConfig(common::EnvReader& env);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context);
/// The SQL migrations of schema `thing_model`, compiled in from migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::thing_model
