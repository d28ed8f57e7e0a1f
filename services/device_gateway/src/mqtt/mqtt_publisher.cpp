#include "iot/device_gateway/mqtt_publisher.h"

#include <fmt/format.h>

#include "iot/device_gateway/topics.h"

namespace iot::device_gateway {
namespace {

/// The iot_auth plugin's PUBACK for a relay to a device that is not connected.
constexpr int kNotAuthorized = 0x87;

class MqttPublisher final : public DevicePublisher {
 public:
  MqttPublisher(std::shared_ptr<common::MqttClient> mqtt, std::chrono::milliseconds timeout)
      : mqtt_(std::move(mqtt)), timeout_(timeout) {}

  absl::StatusOr<bool> Publish(const std::string& device_topic, std::string_view payload,
                               int qos) override {
    const std::string relay = RelayTopic(device_topic);
    if (qos == 0) {
      // No acknowledgement to learn from: QoS 0 cannot tell an offline device.
      if (auto status = mqtt_->Publish(relay, payload, 0); !status.ok()) {
        return status;
      }
      return true;
    }
    auto reason = mqtt_->PublishAndWait(relay, payload, qos, timeout_);
    if (!reason.ok()) {
      return reason.status().code() == absl::StatusCode::kDeadlineExceeded
                 ? absl::UnavailableError(std::string(reason.status().message()))
                 : reason.status();
    }
    if (*reason == kNotAuthorized) {
      return false;
    }
    if (*reason >= 0x80) {
      return absl::InternalError(
          fmt::format("broker refused the downlink: reason 0x{:02x}", *reason));
    }
    return true;
  }

 private:
  std::shared_ptr<common::MqttClient> mqtt_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::shared_ptr<DevicePublisher> MakeMqttPublisher(std::shared_ptr<common::MqttClient> mqtt,
                                                   std::chrono::milliseconds timeout) {
  return std::make_shared<MqttPublisher>(std::move(mqtt), timeout);
}

}  // namespace iot::device_gateway
