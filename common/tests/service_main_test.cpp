#include "iot/common/service_main.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace iot::common {
namespace {

using std::chrono::milliseconds;

/// The typed settings of a test service, read as a service's ReadConfig reads them.
struct TestConfig {
  milliseconds interval{0};
  size_t batch = 0;
  std::string peer_addr;
  std::string service_api_key;
};

nlohmann::json ToJson(const TestConfig& config) {
  return {{"interval_ms", config.interval.count()},
          {"batch", config.batch},
          {"peer_addr", config.peer_addr},
          {"service_api_key", config.service_api_key}};
}

int g_reads = 0;
std::optional<TestConfig> g_wired;

TestConfig ReadTestConfig(EnvReader& env) {
  ++g_reads;
  TestConfig config;
  config.interval = env.Duration("IOT_TYPED_TEST_INTERVAL", milliseconds(250));
  if (config.interval <= milliseconds(0)) {
    env.AddError("IOT_TYPED_TEST_INTERVAL", "must be positive");
  }
  config.batch = static_cast<size_t>(env.Int("IOT_TYPED_TEST_BATCH", 100, 1, 1000));
  config.peer_addr = env.String("IOT_TYPED_TEST_PEER_ADDR", "127.0.0.1:50052");
  config.service_api_key = env.Required("IOT_TYPED_TEST_API_KEY");
  return config;
}

/// Keeps what it was given and stops there: the host never starts (no ports in a unit test).
void WireTestConfig(ServiceContext& /*context*/, const TestConfig& config) {
  g_wired = config;
  throw ConfigError("wired");
}

/// RunService with --migrate-only and without backends logs its configuration and returns;
/// without flags it wires. It reads the process environment, writes the log to stdout and the
/// reason for exit 2 to stderr.
class TypedRunServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_logger_ = spdlog::default_logger();
    pthread_sigmask(SIG_SETMASK, nullptr, &previous_signals_);  // RunService blocks SIGTERM
    g_reads = 0;
    g_wired.reset();
    Set("IOT_TYPED_TEST_LOG_LEVEL", "info");  // whatever IOT_LOG_LEVEL the run has
  }
  void TearDown() override {
    for (const std::string& name : set_) {
      ::unsetenv(name.c_str());  // NOLINT(concurrency-mt-unsafe): no other thread yet
    }
    spdlog::set_default_logger(previous_logger_);
    pthread_sigmask(SIG_SETMASK, &previous_signals_, nullptr);
  }

  void Set(const std::string& name, const std::string& value) {
    ::setenv(name.c_str(), value.c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
    set_.push_back(name);
  }

  static ServiceSpec Spec() {
    return {.name = "typed-test",
            .env_prefix = "IOT_TYPED_TEST",
            .grpc_port = 0,
            .metrics_port = 0,
            .pg_schema = "",
            .migrations = {},
            .uses_redis = false,
            .uses_mqtt = false,
            .mqtt_session_expiry = {}};
  }

  /// RunService's exit code; `out` and `err` what it wrote.
  static int Run(std::vector<std::string> args, std::string& out, std::string& err) {
    args.insert(args.begin(), "typed-test");
    std::vector<char*> argv;
    argv.reserve(args.size());
    for (std::string& arg : args) {
      argv.push_back(arg.data());
    }
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    const int code = RunService(static_cast<int>(argv.size()), argv.data(), Spec(), ReadTestConfig,
                                WireTestConfig);
    std::fflush(stdout);
    out = ::testing::internal::GetCapturedStdout();
    err = ::testing::internal::GetCapturedStderr();
    return code;
  }

 private:
  std::shared_ptr<spdlog::logger> previous_logger_;
  sigset_t previous_signals_{};
  std::vector<std::string> set_;
};

TEST_F(TypedRunServiceTest, LogsTheConfigReadOnceWithSecretsMasked) {
  Set("IOT_TYPED_TEST_INTERVAL", "2s");
  Set("IOT_TYPED_TEST_BATCH", "7");
  Set("IOT_TYPED_TEST_API_KEY", "typed-test-key-never-logged");
  std::string out;
  std::string err;
  ASSERT_EQ(Run({"--migrate-only"}, out, err), 0) << out << err;
  EXPECT_EQ(g_reads, 1);
  EXPECT_FALSE(g_wired.has_value()) << "--migrate-only does not wire";

  const auto first = nlohmann::json::parse(out.substr(0, out.find('\n')));
  EXPECT_EQ(first["msg"], "starting");
  EXPECT_EQ(first["service"], "typed-test");
  const nlohmann::json& config = first["config"];
  EXPECT_EQ(config["interval_ms"], 2000);
  EXPECT_EQ(config["batch"], 7);
  EXPECT_EQ(config["peer_addr"], "127.0.0.1:50052");
  EXPECT_EQ(config["service_api_key"], "***");
  EXPECT_TRUE(config.contains("grpc_port")) << "the shared settings are logged with the own";
  EXPECT_EQ(out.find("typed-test-key-never-logged"), std::string::npos) << out;
}

TEST_F(TypedRunServiceTest, WiresTheConfigItRead) {
  Set("IOT_TYPED_TEST_BATCH", "9");
  Set("IOT_TYPED_TEST_API_KEY", "typed-test-key-never-logged");
  std::string out;
  std::string err;
  EXPECT_EQ(Run({}, out, err), 2);  // WireTestConfig stops with a ConfigError
  EXPECT_EQ(g_reads, 1);
  ASSERT_TRUE(g_wired.has_value()) << out << err;
  EXPECT_EQ(g_wired->interval, milliseconds(250));
  EXPECT_EQ(g_wired->batch, 9u);
  EXPECT_EQ(g_wired->peer_addr, "127.0.0.1:50052");
  EXPECT_EQ(g_wired->service_api_key, "typed-test-key-never-logged");
}

TEST_F(TypedRunServiceTest, BadVariablesExit2NamingEachBeforeWiring) {
  Set("IOT_TYPED_TEST_INTERVAL", "abc");
  Set("IOT_TYPED_TEST_BATCH", "0");
  std::string out;
  std::string err;
  EXPECT_EQ(Run({}, out, err), 2);
  EXPECT_FALSE(g_wired.has_value());
  EXPECT_NE(err.find("typed-test: invalid configuration:"), std::string::npos) << err;
  for (const char* name :
       {"IOT_TYPED_TEST_INTERVAL", "IOT_TYPED_TEST_BATCH", "IOT_TYPED_TEST_API_KEY"}) {
    EXPECT_NE(err.find(name), std::string::npos) << name << " not named in: " << err;
  }
  EXPECT_EQ(out.find("\"msg\":\"starting\""), std::string::npos) << "nothing logged as started";
}

}  // namespace
}  // namespace iot::common
