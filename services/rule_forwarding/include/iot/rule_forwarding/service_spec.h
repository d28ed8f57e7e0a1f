#pragma once

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"
#include "iot/rule_forwarding/history_subscriptions.h"

/// rule-forwarding: rules, forwarding actions, history, subscriptions.
namespace iot::rule_forwarding {

/// Name, ports, env prefix and backends of the rule-forwarding process.
common::ServiceSpec Spec();
/// The service's own settings, beyond what every service reads (README.md, Configuration).
/// Variables IOT_RULE_FORWARDING_<NAME> unless they say otherwise.
struct Config {
  size_t queue_capacity = 0;        ///< QUEUE_CAPACITY: deliveries queued per destination type
  size_t redis_pool_size = 0;       ///< REDIS_POOL_SIZE
  size_t max_batch = 0;             ///< MAX_BATCH: deliveries per Deliver call
  size_t consumer_group_batch = 0;  ///< CONSUMER_GROUP_BATCH
  /// IOT_SECRET_KEY: seals rule actions' secrets at rest; checked when read.
  std::string secret_key;
  /// DESTINATION_ALLOWLIST: networks rule actions may reach besides public addresses; checked
  /// when read.
  std::string destination_allowlist;
  size_t workers = 0;                          ///< WORKERS: dispatcher threads per destination type
  int max_attempts = 0;                        ///< MAX_ATTEMPTS
  std::chrono::milliseconds retry_initial{0};  ///< RETRY_INITIAL
  std::chrono::milliseconds retry_max{0};      ///< RETRY_MAX
  std::chrono::milliseconds dedupe_ttl{0};     ///< DEDUPE_TTL
  std::chrono::milliseconds rules_poll_interval{0};    ///< RULES_POLL_INTERVAL
  std::chrono::milliseconds outbox_lease{0};           ///< OUTBOX_LEASE
  std::chrono::milliseconds rules_reload_interval{0};  ///< RULES_RELOAD_INTERVAL
  std::string thing_model_addr;                        ///< IOT_THING_MODEL_ADDR: for `republish`
  std::string device_gateway_addr;                     ///< IOT_DEVICE_GATEWAY_ADDR: for `republish`
  std::string service_api_key;                         ///< IOT_SERVICE_API_KEY: on calls to both
  std::chrono::milliseconds device_cache_ttl{0};       ///< DEVICE_CACHE_TTL: `republish`'s cache
  HistoryConfig history;                               ///< HISTORY_*, GROUP_METRICS_INTERVAL
};

/// Reads and checks Config once at start; EnvReader names every bad variable.
Config ReadConfig(common::EnvReader& env);
/// Config for the start-up log line, one flat object (RunService masks the key fields).
nlohmann::json ToJson(const Config& config);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context, const Config& config);
/// The SQL migrations of schema `rule_forwarding`, compiled in from migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::rule_forwarding
