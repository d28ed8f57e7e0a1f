#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"

/// thing-model: tenants and API keys, products and thing models, device registry.
namespace iot::thing_model {

/// Name, ports, env prefix and backends of the thing-model process.
common::ServiceSpec Spec();
/// The service's own settings, beyond what every service reads (README.md, Configuration).
struct Config {
  std::string secret_key;         ///< IOT_SECRET_KEY: seals device secrets; checked when read
  std::string bootstrap_tenant;   ///< IOT_THING_MODEL_BOOTSTRAP_TENANT
  std::string bootstrap_api_key;  ///< IOT_THING_MODEL_BOOTSTRAP_API_KEY: empty, none
  std::string service_api_key;    ///< IOT_SERVICE_API_KEY: registered on start; empty, none
};

/// Reads and checks Config once at start; EnvReader names every bad variable.
Config ReadConfig(common::EnvReader& env);
/// Config for the start-up log line (RunService masks the key fields).
nlohmann::json ToJson(const Config& config);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context, const Config& config);
/// The SQL migrations of schema `thing_model`, compiled in from migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::thing_model
