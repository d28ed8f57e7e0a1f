#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "iot/shadow/ports.h"

namespace iot::shadow {

/// thing-model's InternalThingModel.GetDeviceContext with the service credential; answers are
/// cached for `ttl` per device, compiled models per (product, model version).
std::shared_ptr<DeviceDirectory> MakeThingModelDirectory(const std::string& address,
                                                         const std::string& service_key,
                                                         std::chrono::milliseconds ttl);

/// The gateway's InternalDownlink.Publish (DOWNLINK_KIND_PROPERTIES_SET, QoS 1).
std::shared_ptr<DevicePublisher> MakeGatewayPublisher(const std::string& address,
                                                      const std::string& service_key,
                                                      std::chrono::milliseconds timeout);

}  // namespace iot::shadow
