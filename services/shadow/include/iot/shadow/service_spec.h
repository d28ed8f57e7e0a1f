#pragma once

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"

/// shadow: device shadows (desired / reported / delta).
namespace iot::shadow {

/// Name, ports, env prefix and backends of the shadow process.
common::ServiceSpec Spec();
/// The service's own settings, beyond what every service reads (README.md, Configuration).
struct Config {
  std::string thing_model_addr;                   ///< IOT_THING_MODEL_ADDR
  std::string device_gateway_addr;                ///< IOT_DEVICE_GATEWAY_ADDR: delta pushes
  std::string service_api_key;                    ///< IOT_SERVICE_API_KEY: on calls to both
  size_t max_document_bytes = 0;                  ///< IOT_SHADOW_MAX_DOCUMENT_BYTES
  std::chrono::milliseconds flush_interval{0};    ///< IOT_SHADOW_FLUSH_INTERVAL: write-behind
  size_t flush_batch = 0;                         ///< IOT_SHADOW_FLUSH_BATCH
  std::chrono::milliseconds device_cache_ttl{0};  ///< IOT_SHADOW_DEVICE_CACHE_TTL
  std::chrono::milliseconds push_timeout{0};      ///< IOT_SHADOW_PUSH_TIMEOUT
  size_t redis_pool_size = 0;                     ///< IOT_SHADOW_REDIS_POOL_SIZE: live store
  size_t dedupe_window = 0;                       ///< IOT_SHADOW_DEDUPE_WINDOW
};

/// Reads and checks Config once at start; EnvReader names every bad variable.
Config ReadConfig(common::EnvReader& env);
/// Config for the start-up log line (RunService masks the API key).
nlohmann::json ToJson(const Config& config);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context, const Config& config);
/// The SQL migrations of schema `shadow`, compiled in from migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::shadow
