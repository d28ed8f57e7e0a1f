#pragma once

#include <chrono>
#include <string>

#include "absl/status/statusor.h"

namespace iot::common {

/// Asks `address` (host:port) for its gRPC health (grpc.health.v1.Health/Check) of `service`
/// ("" = the whole server). True for SERVING, false for NOT_SERVING/UNKNOWN; an error status
/// when the server cannot be reached in `timeout`.
absl::StatusOr<bool> CheckHealth(const std::string& address, const std::string& service = "",
                                 std::chrono::milliseconds timeout = std::chrono::seconds(2));

}  // namespace iot::common
