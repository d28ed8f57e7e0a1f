#pragma once

// A simulated device for end-to-end tests: an MQTT client of the real broker that connects as
// Huawei's device SDKs do (IoTDA signing, client id {id}_0_0_{YYYYMMDDHH}, never subscribing)
// and keeps everything the platform sends it.

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "iot/common/mqtt.h"

namespace iot::testing {

class SignedDevice {
 public:
  /// Called for every message the device receives, on the client's network thread, after it
  /// is kept; may Publish (e.g. answer a command).
  using Responder = std::function<void(SignedDevice& device, const common::MqttMessage& message)>;

  SignedDevice(const std::string& broker_url, std::string device_id, const std::string& secret);
  ~SignedDevice();

  /// Set before Connect().
  void SetResponder(Responder responder);
  bool Connect(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void Disconnect();

  /// Publishes `payload` on `$oc/devices/{id}/sys/{suffix}` (QoS 1) without waiting.
  bool Publish(const std::string& suffix, const nlohmann::json& payload);
  /// Publishes as Publish does and waits up to `timeout` for the PUBACK: true if it came with a
  /// success reason code. Not from a Responder (the network thread delivers the PUBACK).
  bool PublishAcked(const std::string& suffix, const nlohmann::json& payload,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// The n-th message whose topic starts with `$oc/devices/{id}/sys/{prefix}`, waiting up to
  /// `timeout` for it.
  std::optional<common::MqttMessage> Await(
      const std::string& prefix, size_t nth = 0,
      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Messages received so far whose topic starts with `$oc/devices/{id}/sys/{prefix}`.
  std::vector<common::MqttMessage> Received(const std::string& prefix);

  [[nodiscard]] const std::string& id() const { return id_; }

 private:
  std::string id_;
  std::unique_ptr<common::MqttClient> client_;
  Responder responder_;
  std::mutex mu_;
  std::vector<common::MqttMessage> inbox_;
};

}  // namespace iot::testing
