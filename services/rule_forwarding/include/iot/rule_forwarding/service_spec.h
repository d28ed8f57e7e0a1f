#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"

/// rule-forwarding: rules, forwarding actions, history, subscriptions.
namespace iot::rule_forwarding {

/// Name, ports, env prefix and backends of the rule-forwarding process.
common::ServiceSpec Spec();
/// The service's own settings (IOT_RULE_FORWARDING_*), as JSON for the start-up log line.
nlohmann::json ReadConfig(common::EnvReader& env);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context);
/// The SQL migrations of schema `rule_forwarding`, compiled in from migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::rule_forwarding
