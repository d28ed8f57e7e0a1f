#pragma once

// What one uplink partition session does with each message the broker delivers: a presence
// event (`iot/presence/{device_id}`) or a device's uplink (classified and limited by AdmitUplink)
// becomes pipeline work, with the acknowledgement that releases it to the broker once the
// pipeline has finished it. A message refused here is still handed on (a validation_failed
// record, or nothing for a malformed presence event, acknowledged at once), counted and logged:
// nothing is dropped unacknowledged or acknowledged unrecorded.

#include <cstdint>
#include <functional>
#include <memory>

#include "iot/common/mqtt_consumer.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/pipeline.h"
#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {

/// One per partition session: called on that session's network thread only (the rate limiter
/// is not thread-safe; a device is always in the same partition). Never blocks.
class UplinkIntake {
 public:
  /// Where the work goes: UplinkPipeline::Submit.
  using Submit = std::function<void(WorkItem, UplinkPipeline::Ack)>;
  /// Acknowledges the delivery of `token` to the broker: MqttConsumer::Ack.
  using AckToken = std::function<void(uint64_t token)>;

  UplinkIntake(Submit submit, std::shared_ptr<GatewayMetrics> metrics, UplinkLimits limits,
               AckToken ack);

  /// Takes one delivery (MqttConsumer's handler).
  void OnDelivery(common::MqttDelivery&& delivery);

 private:
  void OnPresence(const common::MqttDelivery& delivery, std::string message_id,
                  UplinkPipeline::Ack ack);

  Submit submit_;
  std::shared_ptr<GatewayMetrics> metrics_;
  UplinkLimits limits_;
  RateLimiter rate_limiter_;
  AckToken ack_;
};

/// When the broker received `delivery` (the plugin's kReceivedAtProperty, milliseconds since the
/// epoch), else `now_unix_ms`; never later than now (the clocks of other machines).
int64_t ReceivedAt(const common::MqttDelivery& delivery, int64_t now_unix_ms);

}  // namespace iot::device_gateway
