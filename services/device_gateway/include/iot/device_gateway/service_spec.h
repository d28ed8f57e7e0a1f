#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"

/// device-gateway: MQTT uplink classification, presence, downlink publish.
namespace iot::device_gateway {

/// Name, ports, env prefix and backends of the device-gateway process.
common::ServiceSpec Spec();
/// The service's own settings, beyond what every service reads (docs/deploy.md:
/// IOT_DEVICE_GATEWAY_* and the owners' addresses).
struct Config {
  std::string thing_model_addr;       ///< IOT_THING_MODEL_ADDR: device contexts, device status
  std::string shadow_addr;            ///< IOT_SHADOW_ADDR
  std::string command_dispatch_addr;  ///< IOT_COMMAND_DISPATCH_ADDR
  std::string rule_forwarding_addr;   ///< IOT_RULE_FORWARDING_ADDR
  std::string service_api_key;        ///< IOT_SERVICE_API_KEY: on calls to all of them
  size_t shards = 0;                  ///< IOT_DEVICE_GATEWAY_SHARDS: pipeline shards
  uint16_t receive_maximum = 0;       ///< IOT_DEVICE_GATEWAY_RECEIVE_MAXIMUM: per session
  /// IOT_DEVICE_GATEWAY_MQTT_KEEPALIVE of the partition sessions, in whole seconds (5 to 65535).
  std::chrono::seconds mqtt_keepalive{0};
  size_t batch_size = 0;         ///< IOT_DEVICE_GATEWAY_BATCH_SIZE: records per owner call
  size_t owner_batches = 0;      ///< IOT_DEVICE_GATEWAY_OWNER_BATCHES: calls in flight per owner
  int max_attempts = 0;          ///< IOT_DEVICE_GATEWAY_MAX_ATTEMPTS: before a dead letter
  int64_t rate_limit = 0;        ///< IOT_DEVICE_GATEWAY_RATE_LIMIT: messages per second per device
  size_t max_payload_bytes = 0;  ///< IOT_DEVICE_GATEWAY_MAX_PAYLOAD_BYTES: uplink and downlink
  size_t max_report_bytes = 0;   ///< IOT_DEVICE_GATEWAY_MAX_REPORT_BYTES
  size_t max_topic_bytes = 0;    ///< IOT_DEVICE_GATEWAY_MAX_TOPIC_BYTES
  size_t max_topic_levels = 0;   ///< IOT_DEVICE_GATEWAY_MAX_TOPIC_LEVELS
  size_t max_id_bytes = 0;       ///< IOT_DEVICE_GATEWAY_MAX_ID_BYTES
  size_t max_services = 0;       ///< IOT_DEVICE_GATEWAY_MAX_SERVICES
  size_t max_properties = 0;     ///< IOT_DEVICE_GATEWAY_MAX_PROPERTIES
  size_t max_name_bytes = 0;     ///< IOT_DEVICE_GATEWAY_MAX_NAME_BYTES
  size_t max_string_bytes = 0;   ///< IOT_DEVICE_GATEWAY_MAX_STRING_BYTES
  size_t device_cache_size = 0;  ///< IOT_DEVICE_GATEWAY_DEVICE_CACHE_SIZE
  std::string share_group;       ///< IOT_DEVICE_GATEWAY_SHARE_GROUP: partition leases' key
  /// IOT_DEVICE_GATEWAY_PARTITION_LEASE: a replica's hold on its partitions (at least 300ms).
  std::chrono::milliseconds partition_lease{0};
  std::chrono::milliseconds call_timeout{0};      ///< IOT_DEVICE_GATEWAY_CALL_TIMEOUT: owners
  std::chrono::milliseconds downlink_timeout{0};  ///< IOT_DEVICE_GATEWAY_DOWNLINK_TIMEOUT
};

/// Reads and checks Config once at start; EnvReader names every bad variable.
Config ReadConfig(common::EnvReader& env);
/// Config for the start-up log line (RunService masks the API key).
nlohmann::json ToJson(const Config& config);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context, const Config& config);
/// The SQL migrations of schema `device_gateway` (dead letters), compiled in from
/// migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::device_gateway
