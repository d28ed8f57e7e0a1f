#pragma once

// What the ServiceHost and HealthService tests share: a host configuration on loopback with
// ports the kernel picks.

#include <chrono>
#include <string>
#include <utility>

#include "iot/common/config.h"

namespace iot::common::host_test {

/// `service` on 127.0.0.1, gRPC and metrics on free ports, readiness probed every 50 ms.
inline ServerConfig LoopbackConfig(
    std::string service, std::chrono::milliseconds drain_timeout = std::chrono::seconds(5)) {
  ServerConfig config;
  config.service = std::move(service);
  config.listen_address = "127.0.0.1";
  config.grpc_port = 0;
  config.metrics_port = 0;
  config.probe_interval = std::chrono::milliseconds(50);
  config.drain_timeout = drain_timeout;
  return config;
}

}  // namespace iot::common::host_test
