#include "iot/common/service_main.h"

#include <iostream>
#include <string_view>
#include <thread>

#include "iot/common/backoff.h"
#include "iot/common/logging.h"
#include "iot/common/mqtt.h"
#include "iot/common/postgres.h"
#include "iot/common/redis.h"
#include "iot/common/url.h"

namespace iot::common {
namespace {

constexpr int kExitConfig = 2;
constexpr int kExitUsage = 64;

struct Flags {
  bool migrate_only = false;
  bool exit_now = false;
  int exit_code = 0;
};

Flags ParseFlags(int argc, char** argv, const ServiceSpec& spec) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--migrate-only") {
      flags.migrate_only = true;
    } else if (arg == "--version") {
      std::cout << spec.name << " " << IOT_VERSION << "\n";
      flags.exit_now = true;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: " << spec.name << " [--migrate-only] [--version]\n\n"
                << "Configuration comes from environment variables: " << spec.env_prefix
                << "_GRPC_PORT (default " << spec.grpc_port << "), " << spec.env_prefix
                << "_METRICS_PORT (default " << spec.metrics_port
                << "), IOT_PG_URL, IOT_REDIS_URL, IOT_MQTT_URL, IOT_LOG_LEVEL ...; see "
                   "docs/deploy.md.\n"
                << "--migrate-only applies the database migrations and exits.\n";
      flags.exit_now = true;
    } else {
      std::cerr << spec.name << ": unknown argument '" << arg << "' (try --help)\n";
      flags.exit_now = true;
      flags.exit_code = kExitUsage;
    }
  }
  return flags;
}

nlohmann::json EffectiveConfig(const ServerConfig& server, const BackendConfig& backend,
                               const ServiceSpec& spec, const nlohmann::json& own) {
  nlohmann::json config = {
      {"listen_address", server.listen_address},
      {"grpc_port", server.grpc_port},
      {"metrics_port", server.metrics_port},
      {"log_level", server.log_level},
      {"drain_timeout_ms", server.drain_timeout.count()},
      {"probe_interval_ms", server.probe_interval.count()},
      {"json_max_depth", server.json.max_depth},
      {"json_max_bytes", server.json.max_bytes},
  };
  if (!spec.pg_schema.empty()) {
    config["pg_url"] = MaskUrl(backend.pg_url);
    config["pg_pool_size"] = backend.pg_pool_size;
    config["pg_schema"] = spec.pg_schema;
  }
  if (spec.uses_redis) {
    config["redis_url"] = MaskUrl(backend.redis_url);
  }
  if (spec.uses_mqtt) {
    config["mqtt_url"] = MaskUrl(backend.mqtt_url);
    config["mqtt_username"] = backend.mqtt_username;
    config["mqtt_password"] = backend.mqtt_password.empty() ? "" : "***";
    config["mqtt_client_id"] = backend.mqtt_client_id;
    config["mqtt_ca_file"] = backend.mqtt_ca_file;
    config["mqtt_session_expiry_ms"] = backend.mqtt_session_expiry.count();
  }
  for (const auto& [key, value] : own.items()) {
    config[key] = IsSecretField(key) ? nlohmann::json("***") : value;
  }
  return config;
}

std::shared_ptr<PgPool> MakePostgres(const BackendConfig& backend) {
  PgPoolOptions options;
  options.url = backend.pg_url;
  options.size = static_cast<size_t>(backend.pg_pool_size);
  return std::make_shared<PgPool>(options);
}

absl::Status Migrate(PgPool& pool, const ServiceSpec& spec) {
  auto applied = ApplyMigrations(pool, spec.pg_schema, spec.migrations());
  if (!applied.ok()) {
    return applied.status();
  }
  LogInfo("migrations applied", {{"schema", spec.pg_schema}, {"applied", *applied}});
  return absl::OkStatus();
}

/// --migrate-only: retries while PostgreSQL is unreachable (a Job may start before the
/// database), fails at once on a migration error.
int MigrateOnly(const ServiceSpec& spec, const BackendConfig& backend) {
  if (spec.pg_schema.empty()) {
    LogInfo("no database schema: nothing to migrate");
    return 0;
  }
  auto pool = MakePostgres(backend);
  Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(5));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (true) {
    absl::Status status = Migrate(*pool, spec);
    if (status.ok()) {
      return 0;
    }
    if (status.code() != absl::StatusCode::kUnavailable ||
        std::chrono::steady_clock::now() > deadline) {
      LogError("migration failed",
               {{"schema", spec.pg_schema}, {"error", std::string(status.message())}});
      return 1;
    }
    LogWarn("database unavailable, retrying", {{"error", std::string(status.message())}});
    std::this_thread::sleep_for(backoff.Next());
  }
}

template <typename T>
std::shared_ptr<T> OrThrow(absl::StatusOr<std::unique_ptr<T>> value, const std::string& what) {
  if (!value.ok()) {
    throw ConfigError(what + ": " + std::string(value.status().message()));
  }
  return std::shared_ptr<T>(*std::move(value));
}

int Serve(const ServiceSpec& spec, const ServerConfig& server, const BackendConfig& backend,
          const internal::OwnConfig& own) {
  ServiceHost host(server);
  ServiceContext context{.host = host,
                         .server = server,
                         .backend = backend,
                         .postgres = nullptr,
                         .redis = nullptr,
                         .mqtt = nullptr};
  if (!spec.pg_schema.empty()) {
    context.postgres = MakePostgres(backend);
    host.AddStartupTask("postgres migrations",
                        [&spec, pool = context.postgres] { return Migrate(*pool, spec); });
    host.AddDependency("postgres", [pool = context.postgres] { return pool->Ping(); });
  }
  if (spec.uses_redis) {
    context.redis = OrThrow(RedisClient::Create({.url = backend.redis_url}), "IOT_REDIS_URL");
    host.AddDependency("redis", [redis = context.redis] { return redis->Ping(); });
  }
  if (spec.uses_mqtt) {
    MqttOptions options;
    options.url = backend.mqtt_url;
    options.client_id = backend.mqtt_client_id;
    options.username = backend.mqtt_username;
    options.password = backend.mqtt_password;
    options.tls_ca_file = backend.mqtt_ca_file;
    options.clean_start = backend.mqtt_session_expiry.count() == 0;
    options.session_expiry_seconds = static_cast<uint32_t>(
        std::chrono::duration_cast<std::chrono::seconds>(backend.mqtt_session_expiry).count());
    context.mqtt = OrThrow(MqttClient::Create(options), "IOT_MQTT_URL");
    host.AddDependency("mqtt", [mqtt = context.mqtt] {
      return mqtt->connected() ? absl::OkStatus() : absl::UnavailableError("not connected");
    });
  }
  own.wire(context);
  if (context.mqtt) {
    // After wiring, so that handlers and subscriptions are in place before the first message.
    if (absl::Status status = context.mqtt->Start(); !status.ok()) {
      throw ConfigError("MQTT: " + std::string(status.message()));
    }
    host.OnShutdown([mqtt = context.mqtt] { mqtt->Stop(); });
  }
  return host.Run();
}

}  // namespace

int internal::RunService(int argc, char** argv, const ServiceSpec& spec, const OwnConfig& own) {
  BlockTerminationSignals();
  const Flags flags = ParseFlags(argc, argv, spec);
  if (flags.exit_now) {
    return flags.exit_code;
  }
  InitLogging(spec.name, "info");
  try {
    EnvReader env;
    const ServerConfig server =
        ServerConfig::Read(env, spec.name, spec.env_prefix, spec.grpc_port, spec.metrics_port);
    const BackendConfig backend =
        BackendConfig::Read(env, spec.env_prefix, spec.name, spec.mqtt_session_expiry);
    own.read(env);
    env.Finish();
    SetProcessJsonLimits(server.json);
    spdlog::default_logger()->set_level(spdlog::level::from_str(server.log_level));
    LogInfo("starting", {{"version", IOT_VERSION},
                         {"config", EffectiveConfig(server, backend, spec, own.describe())}});
    if (flags.migrate_only) {
      return MigrateOnly(spec, backend);
    }
    return Serve(spec, server, backend, own);
  } catch (const ConfigError& e) {
    LogError(e.what());
    std::cerr << spec.name << ": " << e.what() << "\n";
    return kExitConfig;
  } catch (const std::exception& e) {
    LogError("fatal start-up error", {{"error", e.what()}});
    std::cerr << spec.name << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace iot::common
