// Each service binary as a process: health, metrics, migrations, dependency outages, drain,
// bad configuration. Real PostgreSQL, Redis and Mosquitto (iot/testing/servers.h).
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "iot/common/health_client.h"
#include "iot/common/mqtt.h"
#include "iot/shadow/service_spec.h"
#include "iot/testing/http.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/testing/v1/testing.grpc.pb.h"

namespace iot {
namespace {

using iot::testing::Process;
using iot::testing::WaitUntil;
using std::chrono::milliseconds;
using std::chrono::seconds;

struct ServiceCase {
  std::string binary;
  std::string prefix;
  std::string schema;  // empty: no PostgreSQL
};

const std::vector<ServiceCase>& AllServices() {
  static const std::vector<ServiceCase> kServices = {
      {"device-gateway", "IOT_DEVICE_GATEWAY", "device_gateway"},
      {"thing-model", "IOT_THING_MODEL", "thing_model"},
      {"command-dispatch", "IOT_COMMAND_DISPATCH", "command_dispatch"},
      {"shadow", "IOT_SHADOW", "shadow"},
      {"rule-forwarding", "IOT_RULE_FORWARDING", "rule_forwarding"},
  };
  return kServices;
}

/// A service process on free ports, logging to a file in its own temp dir.
class ServiceProcess {
 public:
  ServiceProcess(const ServiceCase& service, std::map<std::string, std::string> env,
                 std::vector<std::string> args = {})
      : grpc_port_(iot::testing::FreePort()), metrics_port_(iot::testing::FreePort()) {
    env[service.prefix + "_GRPC_PORT"] = std::to_string(grpc_port_);
    env[service.prefix + "_METRICS_PORT"] = std::to_string(metrics_port_);
    env[service.prefix + "_LISTEN_ADDRESS"] = "127.0.0.1";
    env[service.prefix + "_PROBE_INTERVAL"] = "200ms";
    env.try_emplace(service.prefix + "_DRAIN_TIMEOUT", "5s");
    std::vector<std::string> argv = {iot::testing::ExecutablePath(service.binary).string()};
    argv.insert(argv.end(), args.begin(), args.end());
    process_ = std::make_unique<Process>(Process::Options{
        .argv = argv, .env = env, .log_file = dir_.path() / "service.log", .run_as_user = {}});
  }

  [[nodiscard]] std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  [[nodiscard]] uint16_t metrics_port() const { return metrics_port_; }
  Process& process() { return *process_; }

  /// nullopt: unreachable; else SERVING or not.
  std::optional<bool> Health() {
    auto health = common::CheckHealth(address(), "", milliseconds(500));
    return health.ok() ? std::optional<bool>(*health) : std::nullopt;
  }
  bool WaitServing(std::chrono::milliseconds timeout = seconds(30)) {
    return WaitUntil([&] { return Health() == std::optional<bool>(true); }, timeout);
  }

 private:
  iot::testing::TempDir dir_{"iot-service"};
  uint16_t grpc_port_;
  uint16_t metrics_port_;
  std::unique_ptr<Process> process_;
};

std::map<std::string, std::string> SharedBackends(const std::string& pg_url) {
  return {{"IOT_PG_URL", pg_url},
          {"IOT_REDIS_URL", iot::testing::SharedRedisUrl()},
          {"IOT_MQTT_URL", iot::testing::SharedMqttUrl()},
          {"IOT_SECRET_KEY", std::string(64, 'b')},
          {"IOT_SERVICE_API_KEY", "services-test-service-key-0123456789"},
          {"IOT_LOG_LEVEL", "debug"}};
}

/// The test database URL with a password in it, to check that logs never show it.
std::string WithPassword(const std::string& url) {
  const std::string marker = "postgres@";
  std::string out = url;
  out.replace(out.find(marker), marker.size(), "postgres:s3cret-pw@");
  return out;
}

class EveryServiceTest : public ::testing::TestWithParam<ServiceCase> {};

TEST_P(EveryServiceTest, ServesHealthAndMetricsThenDrainsOnSigterm) {
  const ServiceCase& service = GetParam();
  ServiceProcess p(service, SharedBackends(WithPassword(iot::testing::CreateTestDatabase())));
  ASSERT_TRUE(p.WaitServing()) << p.process().Log();

  auto body = iot::testing::HttpGet(p.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  auto series = iot::testing::ParsePrometheusText(*body);
  ASSERT_TRUE(series.ok()) << series.status();
  EXPECT_GE(iot::testing::SumSeries(*series, "iot_grpc_server_requests_total",
                                    {{"service", service.binary},
                                     {"method", "/grpc.health.v1.Health/Check"},
                                     {"code", "OK"}}),
            1)
      << "the interceptor did not count the health calls";
  EXPECT_EQ(iot::testing::SumSeries(*series, "iot_build_info", {{"service", service.binary}}), 1);
  EXPECT_EQ(iot::testing::SumSeries(*series, "iot_service_ready"), 1);

  EXPECT_EQ(p.process().Stop(seconds(15)), 0);
  const std::string log = p.process().Log();
  // JSON lines, the first one the effective configuration, no secret anywhere.
  const auto first = nlohmann::json::parse(log.substr(0, log.find('\n')));
  EXPECT_EQ(first["msg"], "starting");
  EXPECT_EQ(first["service"], service.binary);
  EXPECT_TRUE(first["config"].contains("grpc_port"));
  EXPECT_EQ(log.find("s3cret-pw"), std::string::npos) << log;
  EXPECT_NE(log.find("\"msg\":\"stopped\""), std::string::npos) << log;
}

/// A plain gRPC server with gRPC's defaults (SO_REUSEPORT on), as the Python server of issue #15
/// was; nullptr when it could not bind `port`.
std::unique_ptr<grpc::Server> OtherServer(int port, int* bound) {
  static iot::testing::v1::Sleeper::Service service;  // a server needs a service to start
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                           bound);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  return *bound == 0 ? nullptr : std::move(server);
}

INSTANTIATE_TEST_SUITE_P(Services, EveryServiceTest, ::testing::ValuesIn(AllServices()),
                         [](const ::testing::TestParamInfo<ServiceCase>& param_info) {
                           std::string name = param_info.param.binary;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

int CountMigrations(const std::string& url, const std::string& schema) {
  pqxx::connection c(url);
  pqxx::work w(c);
  return w.exec1("SELECT count(*) FROM " + schema + ".schema_migrations")[0].as<int>();
}

TEST(ServiceProcessTest, MigrateOnlyAppliesOnceAndExits) {
  const ServiceCase& service = AllServices()[3];  // shadow
  const std::string db = iot::testing::CreateTestDatabase();
  // The shadow's migrations, whatever their number: all on the first run, none on the second.
  const int migrations = static_cast<int>(iot::shadow::EmbeddedMigrations().size());
  for (int run = 0; run < 2; ++run) {
    ServiceProcess p(service, SharedBackends(db), {"--migrate-only"});
    EXPECT_EQ(p.process().Wait(seconds(60)), std::optional<int>(0)) << p.process().Log();
    EXPECT_NE(p.process().Log().find(fmt::format(R"("applied":{})", run == 0 ? migrations : 0)),
              std::string::npos)
        << p.process().Log();
  }
  EXPECT_EQ(CountMigrations(db, "shadow"), migrations);
}

TEST(ServiceProcessTest, StartsWithPostgresDownAndTurnsServingWhenItComesUp) {
  iot::testing::TestPostgres postgres;
  postgres.Stop();
  ServiceProcess p(AllServices()[1], SharedBackends(postgres.Url()));  // thing-model
  ASSERT_TRUE(WaitUntil([&] { return p.Health().has_value(); }, seconds(30))) << p.process().Log();
  // Several probes later it is still alive and NOT_SERVING.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(p.Health(), std::optional<bool>(false));
    ASSERT_TRUE(p.process().running()) << p.process().Log();
    WaitUntil([] { return false; }, milliseconds(200));
  }
  postgres.Start();
  EXPECT_TRUE(p.WaitServing()) << p.process().Log();
  EXPECT_TRUE(p.process().running());
  EXPECT_GE(CountMigrations(postgres.Url(), "thing_model"), 1) << "migrations ran on recovery";
  EXPECT_EQ(p.process().Stop(), 0);
}

/// What the iot_auth plugin publishes at start (broker/README.md, Uplink), on a plain broker:
/// the gateway consumes nothing, and is not ready, before it knows the partition count.
void AnnounceUplinkPartitions(const iot::testing::TestMosquitto& broker) {
  auto client = common::MqttClient::Create({.url = broker.Url(), .client_id = "announcer"});
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Start().ok());
  ASSERT_TRUE((*client)->WaitConnected(seconds(10)));
  auto rc = (*client)->PublishAndWait("$iot/config/uplink_partitions", "4", 1, seconds(10));
  ASSERT_TRUE(rc.ok()) << rc.status();
  (*client)->Stop();
}

TEST(ServiceProcessTest, GatewayWaitsForTheBrokerAndFollowsIt) {
  iot::testing::TestMosquitto broker;
  broker.Stop();
  auto env = SharedBackends(iot::testing::CreateTestDatabase());
  env["IOT_MQTT_URL"] = broker.Url();
  ServiceProcess p(AllServices()[0], env);  // device-gateway
  ASSERT_TRUE(WaitUntil([&] { return p.Health().has_value(); }, seconds(30)));
  EXPECT_EQ(p.Health(), std::optional<bool>(false));
  broker.Start();
  EXPECT_FALSE(p.WaitServing(seconds(2))) << "ready without knowing the uplink partitions";
  AnnounceUplinkPartitions(broker);
  EXPECT_TRUE(p.WaitServing()) << p.process().Log();
  broker.Stop();
  EXPECT_TRUE(WaitUntil([&] { return p.Health() == std::optional<bool>(false); }, seconds(30)));
  broker.Start();
  AnnounceUplinkPartitions(broker);
  EXPECT_TRUE(p.WaitServing()) << p.process().Log();
  EXPECT_EQ(p.process().Stop(), 0);
}

TEST(ServiceProcessTest, BadConfigurationExitsNonZeroNamingTheVariable) {
  const ServiceCase& shadow = AllServices()[3];
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"IOT_SHADOW_GRPC_PORT", "not-a-port"},
      {"IOT_LOG_LEVEL", "loud"},
      {"IOT_SHADOW_DRAIN_TIMEOUT", "soon"},
      {"IOT_REDIS_URL", "redis-without-scheme"},
  };
  for (const auto& [name, value] : cases) {
    auto env = SharedBackends(iot::testing::SharedPostgresUrl());
    env[name] = value;
    iot::testing::TempDir dir;
    Process p({.argv = {iot::testing::ExecutablePath(shadow.binary).string()},
               .env = env,
               .log_file = dir.path() / "log",
               .run_as_user = {}});
    const auto code = p.Wait(seconds(30));
    ASSERT_TRUE(code.has_value()) << name << ": still running";
    EXPECT_EQ(*code, 2) << name;
    EXPECT_NE(p.Log().find(name), std::string::npos) << name << ": " << p.Log();
  }
}

TEST(ServiceProcessTest, AGrpcPortInUseFailsTheStartInsteadOfBeingShared) {
  // gRPC's default SO_REUSEPORT let a second process bind a taken port and take half of its
  // connections: concurrent test binaries picking the same free port talked to each other.
  const ServiceCase& shadow = AllServices()[3];
  const auto env = SharedBackends(iot::testing::CreateTestDatabase());
  ServiceProcess first(shadow, env);
  ASSERT_TRUE(first.WaitServing()) << first.process().Log();
  auto second_env = env;
  second_env["IOT_SHADOW_GRPC_PORT"] = first.address().substr(first.address().rfind(':') + 1);
  second_env["IOT_SHADOW_METRICS_PORT"] = std::to_string(iot::testing::FreePort());
  second_env["IOT_SHADOW_LISTEN_ADDRESS"] = "127.0.0.1";
  iot::testing::TempDir dir;
  Process second({.argv = {iot::testing::ExecutablePath(shadow.binary).string()},
                  .env = second_env,
                  .log_file = dir.path() / "log",
                  .run_as_user = {}});
  const auto code = second.Wait(seconds(30));
  ASSERT_TRUE(code.has_value()) << "the second process runs on the taken port";
  EXPECT_EQ(*code, 1);
  EXPECT_NE(second.Log().find(fmt::format("cannot listen for gRPC on {}", first.address())),
            std::string::npos)
      << second.Log();
  // Nor can another program with gRPC's defaults share it, as a Python server did next to
  // thing-model (issue #15, item 8).
  int bound = 0;
  const int port = std::stoi(first.address().substr(first.address().rfind(':') + 1));
  EXPECT_EQ(OtherServer(port, &bound), nullptr) << "a plain gRPC server bound port " << port;
  EXPECT_EQ(bound, 0);
  EXPECT_EQ(first.Health(), std::optional<bool>(true));
}

TEST(ServiceProcessTest, SigtermDuringAnInFlightCallCompletesItAndExitsZero) {
  iot::testing::TempDir dir;
  const uint16_t port = iot::testing::FreePort();
  Process server({.argv = {iot::testing::ExecutablePath("iot-test-slow-server").string(),
                           std::to_string(port), "0", "10000"},
                  .env = {},
                  .log_file = dir.path() / "log",
                  .run_as_user = {}});
  const std::string address = "127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(WaitUntil([&] { return common::CheckHealth(address).ok(); }, seconds(30)));
  auto stub = iot::testing::v1::Sleeper::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  auto call = std::async(std::launch::async, [&] {
    grpc::ClientContext context;
    iot::testing::v1::SleepRequest request;
    request.set_milliseconds(1500);
    iot::testing::v1::SleepResponse response;
    const grpc::Status status = stub->Sleep(&context, request, &response);
    return std::make_pair(status, response.slept_milliseconds());
  });
  ASSERT_TRUE(WaitUntil([&] { return server.Log().find("sleep started") != std::string::npos; },
                        seconds(10)));
  server.Signal(SIGTERM);
  const auto [status, slept] = call.get();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(slept, 1500u);
  EXPECT_EQ(server.Wait(seconds(20)), std::optional<int>(0)) << server.Log();
  EXPECT_NE(server.Log().find("SIGTERM"), std::string::npos);
}

}  // namespace
}  // namespace iot
