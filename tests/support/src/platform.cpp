#include "iot/testing/platform.h"

#include <fmt/format.h>

#include "iot/common/crypto.h"
#include "iot/common/health_client.h"
#include "iot/testing/servers.h"

namespace iot::testing {

ThingModelProcess::ThingModelProcess(ThingModelProcessOptions options)
    : options_(std::move(options)) {
  if (options_.pg_url.empty()) {
    options_.pg_url = CreateTestDatabase();
  }
  const uint16_t port = FreePort();
  address_ = "127.0.0.1:" + std::to_string(port);
  std::map<std::string, std::string> env = {
      {"IOT_PG_URL", options_.pg_url},
      {"IOT_REDIS_URL", options_.redis_url},
      {"IOT_SECRET_KEY", options_.secret_key},
      {"IOT_THING_MODEL_BOOTSTRAP_API_KEY", options_.admin_key},
      {"IOT_THING_MODEL_GRPC_PORT", std::to_string(port)},
      {"IOT_THING_MODEL_METRICS_PORT", "0"},
      {"IOT_THING_MODEL_LISTEN_ADDRESS", "127.0.0.1"},
      {"IOT_THING_MODEL_PROBE_INTERVAL", "200ms"}};
  if (!options_.service_key.empty()) {
    env["IOT_SERVICE_API_KEY"] = options_.service_key;
  }
  process_ =
      std::make_unique<Process>(Process::Options{.argv = {ExecutablePath("thing-model").string()},
                                                 .env = std::move(env),
                                                 .log_file = dir_.path() / "thing-model.log",
                                                 .run_as_user = {}});
}

ThingModelProcess::~ThingModelProcess() { process_->Stop(); }

bool ThingModelProcess::WaitServing(std::chrono::milliseconds timeout) {
  return WaitUntil(
      [&] {
        auto health = common::CheckHealth(address_);
        return health.ok() && *health;
      },
      timeout);
}

std::string ServiceAccountEntry(const std::string& name, const std::string& salt,
                                const std::string& password) {
  return fmt::format("{}:{}:{}", name, salt, common::Sha256Hex(salt + password));
}

std::string AuthPluginConfig(const std::string& redis_url, const std::string& secret_key,
                             const std::string& service_accounts) {
  std::string config = fmt::format(
      "allow_anonymous false\n"
      "plugin {}\n"
      "plugin_opt_redis_url {}\n"
      "plugin_opt_secret_key {}\n",
      LibraryPath("libiot_auth.so").string(), redis_url, secret_key);
  if (!service_accounts.empty()) {
    config += "plugin_opt_service_accounts " + service_accounts + "\n";
  }
  return config;
}

}  // namespace iot::testing
