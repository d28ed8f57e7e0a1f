// The Redis and Mosquitto parts of iot/testing/servers.h.

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>

#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot::testing {
namespace {

constexpr auto kStartTimeout = std::chrono::seconds(20);
constexpr auto kStopGrace = std::chrono::seconds(10);

/// Waits for `port`; on failure kills the process and throws with its log.
void AwaitListening(std::unique_ptr<Process>& process, uint16_t port, const std::string& name) {
  if (WaitForPort(port, kStartTimeout)) {
    return;
  }
  const std::string log = process->Log();
  process.reset();
  throw std::runtime_error(name + " did not listen on port " + std::to_string(port) + "; log:\n" +
                           log);
}

std::string EnvOr(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

}  // namespace

// ---- Redis ----

TestRedis::TestRedis() : dir_("iot-redis"), port_(FreePort()) { Start(); }

TestRedis::~TestRedis() { Stop(); }

void TestRedis::Start() {
  if (process_ && process_->running()) {
    return;
  }
  process_ = std::make_unique<Process>(Process::Options{
      .argv = {"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", dir_.path().string()},
      .env = {},
      .log_file = dir_.path() / "redis.log",
      .run_as_user = {}});
  AwaitListening(process_, port_, "redis-server");
}

void TestRedis::Stop() {
  if (process_) {
    process_->Stop(kStopGrace);
    process_.reset();
  }
}

std::string TestRedis::Url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }

// ---- Mosquitto ----

TestMosquitto::TestMosquitto(std::string extra_config)
    : dir_("iot-mosquitto"), port_(FreePort()), extra_config_(std::move(extra_config)) {
  Start();
}

TestMosquitto::~TestMosquitto() { Stop(); }

void TestMosquitto::Start() {
  if (process_ && process_->running()) {
    return;
  }
  const auto config = dir_.path() / "mosquitto.conf";
  {
    std::ofstream out(config, std::ios::trunc);
    out << "listener " << port_ << " 127.0.0.1\n";
    if (extra_config_.find("allow_anonymous") == std::string::npos) {
      out << "allow_anonymous true\n";
    }
    out << "persistence false\n";
    // Logs go to stdout, which Process sends to a file it opened before exec: no file for the
    // broker to open after dropping privileges. As root, keep root (mosquitto 2.0 otherwise
    // switches to user `mosquitto`), so that extra_config may name files under the temp dir.
    out << "log_dest stdout\n";
    if (geteuid() == 0 && extra_config_.find("\nuser ") == std::string::npos &&
        !extra_config_.starts_with("user ")) {
      out << "user root\n";
    }
    out << extra_config_ << "\n";
    if (!out) {
      throw std::runtime_error("cannot write " + config.string());
    }
  }
  // A sanitizer build's plugin needs its runtime loaded first in the uninstrumented broker
  // (cmake/IotSanitizers.cmake writes which one).
  std::map<std::string, std::string> env;
  if (const std::string preload = ReadTextFile(LibraryPath("sanitizer-preload"));
      !preload.empty()) {
    env["LD_PRELOAD"] = preload.substr(0, preload.find('\n'));
    // Debian's mosquitto has no frame pointers, so the fast unwinder stops at its first frame:
    // the slow one gives the broker's leak reports whole stacks (.sanitizers/lsan.supp names
    // mosquitto's own functions, not the allocator the plugin shares with it).
    const char* asan = std::getenv("ASAN_OPTIONS");
    env["ASAN_OPTIONS"] = std::string(asan != nullptr ? asan : "") + ":fast_unwind_on_malloc=0";
  }
  process_ =
      std::make_unique<Process>(Process::Options{.argv = {"mosquitto", "-c", config.string()},
                                                 .env = env,
                                                 .log_file = dir_.path() / "mosquitto.log",
                                                 .run_as_user = {}});
  AwaitListening(process_, port_, "mosquitto");
}

void TestMosquitto::Stop() {
  if (process_) {
    process_->Stop(kStopGrace);
    process_.reset();
  }
}

void TestMosquitto::Kill() {
  if (process_) {
    process_->Signal(SIGKILL);
    (void)process_->Wait(kStopGrace);
    process_.reset();
  }
}

std::string TestMosquitto::Url() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }

// ---- Shared instances ----
// Function-local statics: started on first use, stopped by their destructors at exit.

std::string SharedRedisUrl() {
  static const std::string from_env = EnvOr("IOT_TEST_REDIS_URL");
  if (!from_env.empty()) {
    return from_env;
  }
  static std::mutex mutex;
  static std::unique_ptr<TestRedis> server;
  std::lock_guard lock(mutex);
  if (!server) {
    server = std::make_unique<TestRedis>();
  }
  return server->Url();
}

std::string SharedMqttUrl() {
  static const std::string from_env = EnvOr("IOT_TEST_MQTT_URL");
  if (!from_env.empty()) {
    return from_env;
  }
  static std::mutex mutex;
  static std::unique_ptr<TestMosquitto> server;
  std::lock_guard lock(mutex);
  if (!server) {
    server = std::make_unique<TestMosquitto>();
  }
  return server->Url();
}

}  // namespace iot::testing
