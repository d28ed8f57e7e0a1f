#pragma once

// Wiring of telemetry history and application subscriptions into the rule-forwarding process.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "iot/common/config.h"
#include "iot/common/service_main.h"
#include "iot/rule_forwarding/destination.h"

namespace iot::rule_forwarding {

/// The settings of history and subscriptions (prefix IOT_RULE_FORWARDING_; docs/deploy.md).
struct HistoryConfig {
  int64_t retention_days = 0;                           ///< HISTORY_RETENTION_DAYS
  int64_t days_ahead = 0;                               ///< HISTORY_DAYS_AHEAD: partitions ahead
  std::chrono::milliseconds maintenance_interval{0};    ///< HISTORY_MAINTENANCE_INTERVAL
  size_t batch_rows = 0;                                ///< HISTORY_BATCH_ROWS: rows per COPY
  size_t buffer_rows = 0;                               ///< HISTORY_BUFFER_ROWS
  std::chrono::milliseconds group_metrics_interval{0};  ///< GROUP_METRICS_INTERVAL
};

/// Reads IOT_RULE_FORWARDING_HISTORY_* and IOT_RULE_FORWARDING_GROUP_*, once at start.
HistoryConfig ReadHistoryConfig(common::EnvReader& env);
/// The fields of the start-up log line (merged into the service's).
nlohmann::json ToJson(const HistoryConfig& config);

/// Registers the History and Subscriptions gRPC services, the `history` and `consumer_group`
/// destinations in `registry`, and the background tasks (partition maintenance and retention,
/// group gauges).
void RegisterHistoryAndSubscriptions(
    common::ServiceContext& context, const HistoryConfig& config,
    std::map<std::string, std::shared_ptr<Destination>, std::less<>>& registry);

}  // namespace iot::rule_forwarding
