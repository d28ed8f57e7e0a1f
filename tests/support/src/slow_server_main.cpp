// A process on the common ServiceHost serving iot.testing.v1.Sleeper, for the drain test:
// `iot-test-slow-server GRPC_PORT METRICS_PORT DRAIN_MS`.
#include <chrono>
#include <string>
#include <thread>

#include "iot/common/logging.h"
#include "iot/common/service_host.h"
#include "iot/testing/v1/testing.grpc.pb.h"

namespace {

class SleeperImpl final : public iot::testing::v1::Sleeper::Service {
  grpc::Status Sleep(grpc::ServerContext* /*context*/,
                     const iot::testing::v1::SleepRequest* request,
                     iot::testing::v1::SleepResponse* response) override {
    iot::common::LogInfo("sleep started", {{"ms", request->milliseconds()}});
    std::this_thread::sleep_for(std::chrono::milliseconds(request->milliseconds()));
    response->set_slept_milliseconds(request->milliseconds());
    iot::common::LogInfo("sleep finished");
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  iot::common::BlockTerminationSignals();
  if (argc != 4) {
    return 64;
  }
  iot::common::InitLogging("slow-server", "info");
  iot::common::ServerConfig config;
  config.service = "slow-server";
  config.listen_address = "127.0.0.1";
  config.grpc_port = static_cast<uint16_t>(std::stoi(argv[1]));
  config.metrics_port = static_cast<uint16_t>(std::stoi(argv[2]));
  config.drain_timeout = std::chrono::milliseconds(std::stoi(argv[3]));
  iot::common::ServiceHost host(config);
  SleeperImpl sleeper;
  host.AddService(&sleeper);
  return host.Run();
}
