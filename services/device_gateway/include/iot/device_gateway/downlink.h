#pragma once

// Downlink: iot.device_gateway.v1.InternalDownlink.Publish. Builds the device topic of a
// DownlinkKind and publishes it on the broker plugin's relay topic (`$iot/down/...`), which
// hands it to the device's connection whether or not the device subscribed; the plugin's
// PUBACK tells whether the device is connected.

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "iot/device_gateway/downstream.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/topics.h"

namespace grpc {
class Service;
}

namespace iot::common {
class Authenticator;
class MqttClient;
}  // namespace iot::common

namespace iot::device_gateway {

struct DownlinkRequest {
  std::string tenant_id;
  std::string device_id;
  DownlinkKind kind = DownlinkKind::kMessageDown;
  std::string request_id;
  std::string payload;
  int qos = 1;
  std::string user_topic;  ///< kMessageDown only: below `$oc/devices/{id}/user/`
};

struct DownlinkResult {
  bool online = false;
  std::string topic;  ///< the device topic
};

class DownlinkService {
 public:
  DownlinkService(std::shared_ptr<DevicePublisher> publisher, GatewayMetrics& metrics,
                  size_t max_payload_bytes = 1024 * 1024);
  /// INVALID_ARGUMENT naming the field for a bad request; UNAVAILABLE when the broker cannot
  /// be reached or did not answer.
  absl::StatusOr<DownlinkResult> Publish(const DownlinkRequest& request);

 private:
  std::shared_ptr<DevicePublisher> publisher_;
  GatewayMetrics& metrics_;
  size_t max_payload_bytes_;
};

/// DevicePublisher over the gateway's MQTT connection: QoS 1 relay publishes wait for the
/// plugin's PUBACK (0x87 = device offline) at most `timeout`.
std::shared_ptr<DevicePublisher> MakeMqttPublisher(std::shared_ptr<common::MqttClient> mqtt,
                                                   std::chrono::milliseconds timeout);

/// The InternalDownlink gRPC handler (service credential: Access::kInternal).
std::shared_ptr<grpc::Service> MakeDownlinkHandler(std::shared_ptr<DownlinkService> service,
                                                   std::shared_ptr<common::Authenticator> auth);

}  // namespace iot::device_gateway
