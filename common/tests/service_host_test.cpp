#include "iot/common/service_host.h"

#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include "host_test_support.h"
#include "iot/common/health_client.h"
#include "iot/testing/http.h"
#include "iot/testing/process.h"
#include "iot/testing/v1/testing.grpc.pb.h"

namespace iot::common {
namespace {

using iot::testing::WaitUntil;
using std::chrono::milliseconds;
using std::chrono::seconds;

ServerConfig TestConfig() { return host_test::LoopbackConfig("host-test"); }

std::string Address(const ServiceHost& host) {
  return "127.0.0.1:" + std::to_string(host.grpc_port());
}

bool Serving(const ServiceHost& host) {
  auto health = CheckHealth(Address(host));
  return health.ok() && *health;
}

TEST(ServiceHostTest, NotServingUntilStartupTaskAndDependenciesSucceed) {
  ServiceHost host(TestConfig());
  std::atomic<int> task_attempts{0};
  std::atomic<bool> dependency_up{false};
  std::atomic<bool> ready_called{false};
  host.AddStartupTask("migrations", [&] {
    return ++task_attempts < 3 ? absl::UnavailableError("db down") : absl::OkStatus();
  });
  host.AddDependency("redis", [&] {
    return dependency_up ? absl::OkStatus() : absl::UnavailableError("redis down");
  });
  host.OnReady([&] { ready_called = true; });
  host.Start();

  // Health answers at once, NOT_SERVING, while the task is retried.
  auto health = CheckHealth(Address(host));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_FALSE(*health);
  // Liveness is SERVING all along: a dependency outage is no reason to restart the process.
  auto liveness = CheckHealth(Address(host), std::string(kLivenessService));
  ASSERT_TRUE(liveness.ok()) << liveness.status();
  EXPECT_TRUE(*liveness);
  ASSERT_TRUE(WaitUntil([&] { return ready_called.load(); }, seconds(10)));
  EXPECT_EQ(task_attempts.load(), 3);
  EXPECT_FALSE(Serving(host)) << "dependency still down";

  dependency_up = true;
  EXPECT_TRUE(WaitUntil([&] { return Serving(host); }, seconds(5)));
  // A dependency that goes down again turns health back to NOT_SERVING, and back up.
  dependency_up = false;
  EXPECT_TRUE(WaitUntil([&] { return !Serving(host); }, seconds(5)));
  dependency_up = true;
  EXPECT_TRUE(WaitUntil([&] { return Serving(host); }, seconds(5)));
  EXPECT_EQ(task_attempts.load(), 3) << "a start-up task runs once after it succeeds";
  host.Shutdown();
}

TEST(ServiceHostTest, MetricsParseAndCountHealthCalls) {
  ServiceHost host(TestConfig());
  host.Start();
  ASSERT_TRUE(WaitUntil([&] { return Serving(host); }, seconds(5)));
  ASSERT_TRUE(CheckHealth(Address(host)).ok());

  const std::map<std::string, std::string> labels = {
      {"service", "host-test"}, {"method", "/grpc.health.v1.Health/Check"}, {"code", "OK"}};
  auto scrape = [&] {
    auto body = iot::testing::HttpGet(host.metrics_port(), "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    auto series = iot::testing::ParsePrometheusText(body.ok() ? *body : "");
    EXPECT_TRUE(series.ok()) << series.status();
    return series.ok() ? *series : std::map<std::string, double>{};
  };
  const auto before = scrape();
  const double calls_before =
      iot::testing::SumSeries(before, "iot_grpc_server_requests_total", labels);
  EXPECT_GE(calls_before, 1);
  EXPECT_EQ(iot::testing::SumSeries(before, "iot_build_info", {{"service", "host-test"}}), 1);
  EXPECT_GT(iot::testing::SumSeries(before, "iot_process_resident_memory_bytes"), 0);
  EXPECT_EQ(iot::testing::SumSeries(before, "iot_service_ready"), 1);

  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(CheckHealth(Address(host)).ok());
  }
  const auto after = scrape();
  EXPECT_EQ(iot::testing::SumSeries(after, "iot_grpc_server_requests_total", labels),
            calls_before + 3);
  EXPECT_GE(iot::testing::SumSeries(after, "iot_grpc_server_request_duration_seconds_count",
                                    {{"method", "/grpc.health.v1.Health/Check"}}),
            calls_before + 3);
  host.Shutdown();
}

class SlowSleeper final : public iot::testing::v1::Sleeper::Service {
 public:
  grpc::Status Sleep(grpc::ServerContext*, const iot::testing::v1::SleepRequest* request,
                     iot::testing::v1::SleepResponse* response) override {
    started_.set_value();
    std::this_thread::sleep_for(milliseconds(request->milliseconds()));
    response->set_slept_milliseconds(request->milliseconds());
    return grpc::Status::OK;
  }
  std::promise<void> started_;
};

TEST(ServiceHostTest, ShutdownLetsInFlightCallsFinishAndRefusesNewOnes) {
  ServiceHost host(TestConfig());
  SlowSleeper sleeper;
  host.AddService(&sleeper);
  host.Start();
  auto channel = grpc::CreateChannel(Address(host), grpc::InsecureChannelCredentials());
  auto stub = iot::testing::v1::Sleeper::NewStub(channel);

  auto call = std::async(std::launch::async, [&] {
    grpc::ClientContext context;
    iot::testing::v1::SleepRequest request;
    request.set_milliseconds(800);
    iot::testing::v1::SleepResponse response;
    const grpc::Status status = stub->Sleep(&context, request, &response);
    return std::make_pair(status, response.slept_milliseconds());
  });
  sleeper.started_.get_future().wait();
  std::thread shutdown([&] { host.Shutdown(); });
  const auto [status, slept] = call.get();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(slept, 800u);
  shutdown.join();
  EXPECT_FALSE(CheckHealth(Address(host), "", milliseconds(500)).ok()) << "server still answers";
}

}  // namespace
}  // namespace iot::common
