#pragma once

// The gateway's control topics, on its own MQTT connection (common/mqtt.h): the broker plugin's
// uplink partition count and the broker's count of messages it dropped at its queue limits.

#include <array>
#include <memory>
#include <string_view>

#include "iot/common/mqtt.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/ports.h"
#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {

/// The broker's count of messages dropped at its queue limits (max_queued_messages/_bytes).
inline constexpr std::string_view kBrokerDroppedTopic = "$SYS/broker/publish/messages/dropped";

/// Acts on a message of the control topics: the partition count goes to the partition owner
/// (a malformed one is logged and ignored), the broker's drop counter to
/// iot_gateway_broker_dropped_messages (logged as an error when it grew: device data was lost).
/// Any other topic is ignored. Not thread-safe: the MQTT client's one network thread calls it.
class BrokerControl {
 public:
  /// What to subscribe to (QoS 1).
  static constexpr std::array<std::string_view, 2> kTopics = {kPartitionsTopic,
                                                              kBrokerDroppedTopic};

  /// `partitions` is held weakly: once it is gone (shutting down) partition counts are ignored.
  BrokerControl(std::weak_ptr<PartitionCountSink> partitions,
                std::shared_ptr<GatewayMetrics> metrics);

  void OnMessage(const common::MqttMessage& message);

 private:
  void OnPartitionCount(const std::string& payload);
  void OnBrokerDropped(const std::string& payload);

  std::weak_ptr<PartitionCountSink> partitions_;
  std::shared_ptr<GatewayMetrics> metrics_;
  double broker_dropped_ = 0;  ///< The last count seen.
};

}  // namespace iot::device_gateway
