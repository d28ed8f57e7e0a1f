#pragma once

// The gRPC clients behind the ports (src/grpc/): thing-model and the owners of device data,
// each call with the platform service credential (`authorization: Bearer {service_key}`).

#include <chrono>
#include <memory>
#include <string>

#include "iot/device_gateway/ports.h"

namespace iot::device_gateway {

/// thing-model's InternalThingModel.GetDeviceContext.
std::shared_ptr<DeviceContextSource> MakeThingModelContextSource(const std::string& address,
                                                                 const std::string& service_key);

/// thing-model's InternalThingModel.ReportDevicePresence.
std::shared_ptr<DeviceStatusSink> MakeThingModelStatusSink(const std::string& address,
                                                           const std::string& service_key);

struct DownstreamAddresses {
  /// host:port of each owner; "none" (or empty): that owner is not deployed and gets nothing
  /// (logged at start). Calls carry `authorization: Bearer {service_key}`.
  std::string shadow;
  std::string command_dispatch;
  std::string rule_forwarding;
  std::string service_key;
  std::chrono::milliseconds timeout{5000};
};

/// The owners (shadow, command-dispatch, rule-forwarding) over gRPC.
std::shared_ptr<Downstream> MakeGrpcDownstream(const DownstreamAddresses& addresses);

}  // namespace iot::device_gateway
