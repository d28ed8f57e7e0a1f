// iot-health: exits 0 iff every given gRPC address reports SERVING. For scripts, container
// health checks and humans: `iot-health --wait 30 127.0.0.1:50051 127.0.0.1:50052`.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "iot/common/health_client.h"

int main(int argc, char** argv) {
  CLI::App app{"Checks gRPC health (grpc.health.v1) of one or more servers"};
  std::vector<std::string> addresses;
  std::string service;
  double wait_seconds = 0;
  double timeout_seconds = 2;
  bool quiet = false;
  app.add_option("addresses", addresses, "host:port of each server")->required();
  app.add_option("--service", service, "Health service name (default: the whole server)");
  app.add_option("--wait", wait_seconds, "Keep polling up to this many seconds until SERVING");
  app.add_option("--timeout", timeout_seconds, "Per-check timeout in seconds");
  app.add_flag("-q,--quiet", quiet, "Print nothing");
  CLI11_PARSE(app, argc, argv);

  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_seconds);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  bool all_serving = true;
  for (const std::string& address : addresses) {
    std::string state;
    while (true) {
      auto result = iot::common::CheckHealth(address, service, timeout);
      if (result.ok() && *result) {
        state = "SERVING";
        break;
      }
      state = result.ok() ? "NOT_SERVING"
                          : "UNREACHABLE (" + std::string(result.status().message()) + ")";
      if (std::chrono::steady_clock::now() >= deadline) {
        all_serving = false;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (!quiet) {
      std::cout << address << " " << state << "\n";
    }
  }
  return all_serving ? 0 : 1;
}
