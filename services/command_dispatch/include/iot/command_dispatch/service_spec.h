#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"

/// command-dispatch: commands, property set/get, messages down.
namespace iot::command_dispatch {

/// Name, ports, env prefix and backends of the command-dispatch process.
common::ServiceSpec Spec();
/// The service's own settings, beyond what every service reads (README.md, Configuration).
struct Config {
  std::string service_api_key;      ///< IOT_SERVICE_API_KEY: on calls to both peers
  std::string thing_model_addr;     ///< IOT_THING_MODEL_ADDR
  std::string device_gateway_addr;  ///< IOT_DEVICE_GATEWAY_ADDR
  /// IOT_COMMAND_DISPATCH_REPLICA_ID: random per start unless set.
  std::string replica_id;
  std::chrono::milliseconds sweep_interval{0};  ///< IOT_COMMAND_DISPATCH_SWEEP_INTERVAL
  /// IOT_COMMAND_DISPATCH_ASYNC_RESPONSE_TIMEOUT
  std::chrono::milliseconds async_response_timeout{0};
  std::chrono::milliseconds device_cache_ttl{0};  ///< IOT_COMMAND_DISPATCH_DEVICE_CACHE_TTL
};

/// Reads and checks Config once at start; EnvReader names every bad variable.
Config ReadConfig(common::EnvReader& env);
/// Config for the start-up log line (RunService masks the API key).
nlohmann::json ToJson(const Config& config);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context, const Config& config);
/// The SQL migrations of schema `command_dispatch`, compiled in from migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::command_dispatch
