#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_main.h"

/// command-dispatch: commands, property set/get, messages down.
namespace iot::command_dispatch {

/// Name, ports, env prefix and backends of the command-dispatch process.
common::ServiceSpec Spec();
/// The service's own settings (IOT_COMMAND_DISPATCH_*), as JSON for the start-up log line.
nlohmann::json ReadConfig(common::EnvReader& env);
/// Registers handlers, start-up tasks and consumers on the host.
void Wire(common::ServiceContext& context);
/// The SQL migrations of schema `command_dispatch`, compiled in from migrations/*.sql.
std::vector<common::Migration> EmbeddedMigrations();

}  // namespace iot::command_dispatch
