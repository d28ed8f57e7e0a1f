#pragma once

// Downlink: iot.device_gateway.v1.InternalDownlink.Publish. Builds the device topic of a
// DownlinkKind and publishes it on the broker plugin's relay topic (`$iot/down/...`), which
// hands it to the device's connection whether or not the device subscribed; the plugin's
// PUBACK tells whether the device is connected. A device of the alink dialect gets the
// Alibaba topic and payload instead (alink/downlink_codec.h).

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/ports.h"
#include "iot/device_gateway/topics.h"

namespace iot::device_gateway {

class DeviceCache;
struct DeviceInfo;

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
  std::string topic;  ///< the device topic (the Alibaba topic for an alink device)
};

class DownlinkService {
 public:
  /// `devices`: where a device's dialect comes from (null: every device is huawei);
  /// `owners`: shadow's device-get, for the whole shadow an alink device's control carries.
  DownlinkService(std::shared_ptr<DevicePublisher> publisher, GatewayMetrics& metrics,
                  size_t max_payload_bytes = 1024 * 1024,
                  std::shared_ptr<DeviceCache> devices = nullptr,
                  std::shared_ptr<Downstream> owners = nullptr);
  /// INVALID_ARGUMENT naming the field for a bad request; UNAVAILABLE when the broker (or,
  /// for a device not yet cached, thing-model) cannot be reached or did not answer.
  absl::StatusOr<DownlinkResult> Publish(const DownlinkRequest& request);

 private:
  /// The Alibaba topic and payload of `request` for an alink device.
  absl::StatusOr<DownlinkResult> PublishAlink(const DownlinkRequest& request,
                                              const DeviceInfo& device);
  /// Publishes `payload` on `publisher_topic`, counts it and logs a failure.
  absl::StatusOr<DownlinkResult> Send(const DownlinkRequest& request,
                                      const std::string& publisher_topic,
                                      const std::string& device_topic, std::string_view payload);

  std::shared_ptr<DevicePublisher> publisher_;
  GatewayMetrics& metrics_;
  size_t max_payload_bytes_;
  std::shared_ptr<DeviceCache> devices_;
  std::shared_ptr<Downstream> owners_;
};

}  // namespace iot::device_gateway
