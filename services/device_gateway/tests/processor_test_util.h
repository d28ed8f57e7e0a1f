#pragma once

// What the processor tests (pipeline_test.cpp, alink_uplink_test.cpp) read from UplinkProcessor's
// outputs and counters.

#include <string>
#include <vector>

#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/processor.h"

namespace iot::device_gateway::test_util {

/// iot_gateway_uplink_rejected_total{reason}.
inline double RejectedCount(GatewayMetrics& metrics, const std::string& reason) {
  return metrics.uplink_rejected.Add({{"reason", reason}}).Value();
}

/// `{resource}/{event}` of each forwarding record, in order.
inline std::vector<std::string> RecordKinds(const Outputs& out) {
  std::vector<std::string> kinds;
  for (const auto& r : out.records.records()) {
    kinds.push_back(r.resource() + "/" + r.event());
  }
  return kinds;
}

}  // namespace iot::device_gateway::test_util
