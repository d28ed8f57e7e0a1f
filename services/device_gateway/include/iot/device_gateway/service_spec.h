#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"

/// device-gateway: MQTT uplink classification, presence, downlink publish.
namespace iot::device_gateway {

/// Name, ports, env prefix and backends of the device-gateway process.
common::ServiceSpec Spec();
/// The service's own settings (IOT_DEVICE_GATEWAY_*), as JSON for the start-up log line.
nlohmann::json ReadConfig(common::EnvReader& env);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context);
/// The SQL migrations of schema `device_gateway` (dead letters), compiled in from
/// migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::device_gateway
