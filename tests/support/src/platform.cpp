#include "iot/testing/platform.h"

#include <fmt/format.h>

#include <csignal>
#include <ctime>
#include <fstream>
#include <sstream>

#include "iot/common/crypto.h"
#include "iot/common/health_client.h"
#include "iot/testing/http.h"
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

ServiceProcess::ServiceProcess(ServiceProcessOptions options)
    : options_(std::move(options)), dir_("iot-" + options_.binary) {
  grpc_port_ = options_.grpc_port != 0 ? options_.grpc_port : FreePort();
  metrics_port_ = FreePort();
  address_ = "127.0.0.1:" + std::to_string(grpc_port_);
  const std::string& prefix = options_.env_prefix;
  options_.env[prefix + "_GRPC_PORT"] = std::to_string(grpc_port_);
  options_.env[prefix + "_METRICS_PORT"] = std::to_string(metrics_port_);
  options_.env[prefix + "_LISTEN_ADDRESS"] = "127.0.0.1";
  options_.env.try_emplace(prefix + "_PROBE_INTERVAL", "200ms");
  Start();
}

ServiceProcess::~ServiceProcess() { process_->Stop(); }

void ServiceProcess::Start() {
  std::vector<std::string> argv = {ExecutablePath(options_.binary).string()};
  argv.insert(argv.end(), options_.args.begin(), options_.args.end());
  ++starts_;
  process_ = std::make_unique<Process>(
      Process::Options{.argv = std::move(argv),
                       .env = options_.env,
                       .log_file = dir_.path() / fmt::format("{}.{}.log", options_.binary, starts_),
                       .run_as_user = {}});
}

void ServiceProcess::Restart(bool kill) {
  if (kill) {
    process_->Signal(SIGKILL);
    (void)process_->Wait(std::chrono::seconds(10));
  } else {
    process_->Stop();
  }
  Start();
}

bool ServiceProcess::WaitServing(std::chrono::milliseconds timeout) {
  // gRPC's default health service answers SERVING from the server's start until the host sets
  // it to not serving a moment later: a check in that window passed for a service whose
  // dependencies were not up yet (a gateway that had not subscribed its partitions, so the
  // test's first uplink went to no session). The ready gauge is 1 only once the host says so.
  return WaitUntil(
      [&] {
        auto health = common::CheckHealth(address_);
        if (!health.ok() || !*health) {
          return false;
        }
        const std::string metrics = Metrics();
        const size_t line = metrics.find("\niot_service_ready{");
        const size_t end = metrics.find('\n', line + 1);
        return line != std::string::npos && end != std::string::npos &&
               metrics.compare(end - 2, 2, " 1") == 0;
      },
      timeout);
}

std::string ServiceProcess::Metrics() const {
  auto text = HttpGet(metrics_port_, "/metrics");
  return text.ok() ? *text : std::string();
}

DeviceCredentials SignDevice(const std::string& device_id, const std::string& secret) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  const std::string hour = fmt::format("{:04d}{:02d}{:02d}{:02d}", tm.tm_year + 1900, tm.tm_mon + 1,
                                       tm.tm_mday, tm.tm_hour);
  return {.client_id = fmt::format("{}_0_0_{}", device_id, hour),
          .username = device_id,
          .password = common::HmacSha256Hex(hour, secret)};
}

std::string ReadTextFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
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
