#pragma once

// The DevicePublisher adapter (ports.h) over the gateway's MQTT connection (src/mqtt/).

#include <chrono>
#include <memory>

#include "iot/common/mqtt.h"
#include "iot/device_gateway/ports.h"

namespace iot::device_gateway {

/// Publishes on the broker plugin's relay topic (`$iot/down/...`, topics.h RelayTopic); a QoS 1
/// publish waits at most `timeout` for the plugin's PUBACK (0x87 = device offline: false).
std::shared_ptr<DevicePublisher> MakeMqttPublisher(std::shared_ptr<common::MqttClient> mqtt,
                                                   std::chrono::milliseconds timeout);

}  // namespace iot::device_gateway
