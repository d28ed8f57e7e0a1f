#include "iot/device_gateway/broker_control.h"

#include <cstdlib>

#include "iot/common/logging.h"
#include "iot/device_gateway/partitions.h"

namespace iot::device_gateway {

BrokerControl::BrokerControl(std::weak_ptr<PartitionCountSink> partitions,
                             std::shared_ptr<GatewayMetrics> metrics)
    : partitions_(std::move(partitions)), metrics_(std::move(metrics)) {}

void BrokerControl::OnMessage(const common::MqttMessage& message) {
  if (message.topic == kPartitionsTopic) {
    OnPartitionCount(message.payload);
  } else if (message.topic == kBrokerDroppedTopic) {
    OnBrokerDropped(message.payload);
  }
}

void BrokerControl::OnPartitionCount(const std::string& payload) {
  const auto held = partitions_.lock();
  if (held == nullptr) {
    return;  // shutting down
  }
  if (const auto count = ParsePartitionCount(payload)) {
    held->SetPartitionCount(*count);
  } else {
    common::LogError("malformed uplink partition count from the broker", {{"payload", payload}});
  }
}

void BrokerControl::OnBrokerDropped(const std::string& payload) {
  const double dropped = std::strtod(payload.c_str(), nullptr);
  metrics_->broker_dropped.Set(dropped);
  if (dropped > broker_dropped_) {
    common::LogError(
        "the broker dropped messages at its queue limits (max_queued_messages / "
        "max_queued_bytes): device data was lost",
        {{"dropped_total", dropped}});
  }
  broker_dropped_ = dropped;
}

}  // namespace iot::device_gateway
