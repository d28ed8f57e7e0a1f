#include "iot/common/health_service.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>

#include "host_test_support.h"
#include "iot/common/service_host.h"

namespace iot::common {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using std::chrono::seconds;

/// A real gRPC server on a loopback port serving only `health`.
class HealthServer {
 public:
  explicit HealthServer(HealthService& health) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&health);
    server_ = builder.BuildAndStart();
    stub_ = Health::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                                grpc::InsecureChannelCredentials()));
  }
  ~HealthServer() { server_->Shutdown(std::chrono::system_clock::now()); }
  HealthServer(const HealthServer&) = delete;
  HealthServer& operator=(const HealthServer&) = delete;

  /// Check(service): the status, or the gRPC error code as a negative number.
  int Check(const std::string& service) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(5));
    HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    const grpc::Status status = stub_->Check(&context, request, &response);
    return status.ok() ? response.status() : -status.error_code();
  }

  Health::Stub& stub() { return *stub_; }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST(HealthServiceTest, OverallStatusIsNotServingFromTheFirstCallUntilSet) {
  HealthService health;
  HealthServer server(health);
  // gRPC's built-in health service answers SERVING here, before anything was set.
  EXPECT_EQ(server.Check(""), HealthCheckResponse::NOT_SERVING);
  health.SetServing("", true);
  EXPECT_EQ(server.Check(""), HealthCheckResponse::SERVING);
  health.SetServing("", false);
  EXPECT_EQ(server.Check(""), HealthCheckResponse::NOT_SERVING);
}

TEST(HealthServiceTest, UnknownNamesAreNotFoundAndSetOnesAnswerTheirStatus) {
  HealthService health;
  HealthServer server(health);
  EXPECT_EQ(server.Check("liveness"), -grpc::StatusCode::NOT_FOUND);
  health.SetServing("liveness", false);
  EXPECT_EQ(server.Check("liveness"), HealthCheckResponse::NOT_SERVING);
  health.SetServing("liveness", true);
  EXPECT_EQ(server.Check("liveness"), HealthCheckResponse::SERVING);
  EXPECT_EQ(server.Check("db"), -grpc::StatusCode::NOT_FOUND) << "one name set, not others";
}

TEST(HealthServiceTest, ShutdownSetsEverythingNotServingForGood) {
  HealthService health;
  HealthServer server(health);
  health.SetServing("", true);
  health.SetServing("liveness", true);
  health.Shutdown();
  EXPECT_EQ(server.Check(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(server.Check("liveness"), HealthCheckResponse::NOT_SERVING);
  health.SetServing("", true);
  EXPECT_EQ(server.Check(""), HealthCheckResponse::NOT_SERVING) << "set after Shutdown";
}

TEST(HealthServiceTest, WatchStreamsEachChangeAndEndsAtShutdown) {
  HealthService health;
  HealthServer server(health);
  grpc::ClientContext context;
  HealthCheckRequest request;
  request.set_service("db");
  auto reader = server.stub().Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  health.SetServing("db", false);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health.SetServing("", true);  // another name: nothing sent
  health.SetServing("db", true);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  health.Shutdown();
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(reader->Read(&response)) << "the stream ends at Shutdown";
  EXPECT_TRUE(reader->Finish().ok());
}

TEST(HealthServiceTest, AnOpenWatchDoesNotHoldUpTheHostsDrain) {
  ServiceHost host(host_test::LoopbackConfig("health-test", seconds(20)));
  host.AddDependency("db", [] { return absl::UnavailableError("down"); });
  host.Start();
  auto stub = Health::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(host.grpc_port()),
                                                  grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  HealthCheckRequest request;
  auto reader = stub->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING) << "its dependency is down";

  const auto start = std::chrono::steady_clock::now();
  auto shutdown = std::async(std::launch::async, [&] { host.Shutdown(); });
  while (reader->Read(&response)) {
    EXPECT_NE(response.status(), HealthCheckResponse::SERVING);
  }
  EXPECT_TRUE(reader->Finish().ok());
  shutdown.get();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5))
      << "the host waited out its drain timeout for the Watch call";
}

}  // namespace
}  // namespace iot::common
