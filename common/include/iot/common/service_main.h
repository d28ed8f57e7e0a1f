#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "iot/common/config.h"
#include "iot/common/migrations.h"
#include "iot/common/service_host.h"

namespace iot::common {

class PgPool;
class RedisClient;
class MqttClient;

/// What a service process needs besides its own logic: name, env prefix, default ports, and
/// which backends it connects to.
struct ServiceSpec {
  std::string name;        ///< "shadow": logs, metric labels
  std::string env_prefix;  ///< "IOT_SHADOW"
  uint16_t grpc_port = 0;
  uint16_t metrics_port = 0;
  /// PostgreSQL schema the service owns; empty: the service does not use PostgreSQL.
  std::string pg_schema;
  std::function<std::vector<Migration>()> migrations;
  bool uses_redis = false;
  bool uses_mqtt = false;
  /// Default of `<prefix>_MQTT_SESSION_EXPIRY`: > 0 makes the MQTT session persistent.
  std::chrono::milliseconds mqtt_session_expiry{0};
};

/// The connected backends handed to a service's wiring. Each is null unless the spec asks for
/// it. They connect lazily and reconnect by themselves; the host's health follows them.
struct ServiceContext {
  ServiceHost& host;
  const ServerConfig& server;
  const BackendConfig& backend;
  std::shared_ptr<PgPool> postgres;
  std::shared_ptr<RedisClient> redis;
  std::shared_ptr<MqttClient> mqtt;
};

namespace internal {

/// What RunService needs of a service's own configuration, whatever its type.
struct OwnConfig {
  /// Reads the settings once and keeps them; a bad value is recorded in `env`, which names it.
  std::function<void(EnvReader&)> read;
  /// The settings as JSON for the start-up log line; fields named like secrets (IsSecretField)
  /// are masked there.
  std::function<nlohmann::json()> describe;
  /// Registers the service's gRPC handlers, start-up tasks and consumers on the host.
  std::function<void(ServiceContext&)> wire;
};

int RunService(int argc, char** argv, const ServiceSpec& spec, const OwnConfig& own);

}  // namespace internal

/// The whole main() of a service: flags (--help, --version, --migrate-only), configuration
/// (a bad value exits 2 naming the variable), JSON logging, the first log line with the
/// effective configuration, backends, wiring, serve until SIGTERM, drain, exit 0.
///
/// `Config` is the service's own settings (beyond ServerConfig/BackendConfig): `read_config`
/// reads and validates it once (EnvReader::AddError for what it checks itself), before anything
/// connects; `ToJson(const Config&)`, found next to `Config`, gives the fields of the start-up
/// log line, where those named like secrets (IsSecretField: "secret_key", "service_api_key", ...)
/// are masked; `wire` gets the same Config.
template <typename Config>
int RunService(int argc, char** argv, const ServiceSpec& spec, Config (*read_config)(EnvReader&),
               void (*wire)(ServiceContext&, const Config&)) {
  std::optional<Config> config;
  return internal::RunService(argc, argv, spec,
                              {.read = [&](EnvReader& env) { config.emplace(read_config(env)); },
                               .describe = [&] { return nlohmann::json(ToJson(*config)); },
                               .wire = [&](ServiceContext& context) { wire(context, *config); }});
}

}  // namespace iot::common
