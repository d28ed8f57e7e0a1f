#pragma once

// Wiring of telemetry history and application subscriptions into the rule-forwarding process.

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "iot/common/config.h"
#include "iot/common/service_main.h"
#include "iot/rule_forwarding/destination.h"

namespace iot::rule_forwarding {

/// Reads IOT_RULE_FORWARDING_HISTORY_* and IOT_RULE_FORWARDING_GROUP_* into `settings`
/// (docs/deploy.md).
void ReadHistoryAndSubscriptionsConfig(common::EnvReader& env, nlohmann::json& settings);

/// Registers the History and Subscriptions gRPC services, the `history` and `consumer_group`
/// destinations in `registry`, and the background tasks (partition maintenance and retention,
/// group gauges). `context.settings` must hold what ReadHistoryAndSubscriptionsConfig read.
void RegisterHistoryAndSubscriptions(
    common::ServiceContext& context,
    std::map<std::string, std::shared_ptr<Destination>, std::less<>>& registry);

}  // namespace iot::rule_forwarding
