#include "iot/testing/device.h"

#include <fmt/format.h>

#include <ctime>
#include <stdexcept>

#include "iot/testing/platform.h"
#include "iot/testing/process.h"

namespace iot::testing {
SignedDevice::SignedDevice(const std::string& broker_url, std::string device_id,
                           const std::string& secret)
    : id_(std::move(device_id)) {
  const DeviceCredentials credentials = SignDevice(id_, secret);
  auto client = common::MqttClient::Create({.url = broker_url,
                                            .client_id = credentials.client_id,
                                            .username = credentials.username,
                                            .password = credentials.password});
  if (!client.ok()) {
    throw std::runtime_error(std::string(client.status().message()));
  }
  client_ = *std::move(client);
  client_->SetMessageHandler([this](const common::MqttMessage& m) {
    {
      std::lock_guard lock(mu_);
      inbox_.push_back(m);
    }
    if (responder_) {
      responder_(*this, m);
    }
  });
}

SignedDevice::~SignedDevice() { client_->Stop(); }

void SignedDevice::SetResponder(Responder responder) { responder_ = std::move(responder); }

bool SignedDevice::Connect(std::chrono::milliseconds timeout) {
  return client_->Start().ok() && client_->WaitConnected(timeout);
}

void SignedDevice::Disconnect() { client_->Stop(); }

bool SignedDevice::Publish(const std::string& suffix, const nlohmann::json& payload) {
  return client_->Publish("$oc/devices/" + id_ + "/sys/" + suffix, payload.dump(), 1).ok();
}

bool SignedDevice::PublishAcked(const std::string& suffix, const nlohmann::json& payload,
                                std::chrono::milliseconds timeout) {
  const auto reason =
      client_->PublishAndWait("$oc/devices/" + id_ + "/sys/" + suffix, payload.dump(), 1, timeout);
  return reason.ok() && *reason < 0x80;
}

std::optional<common::MqttMessage> SignedDevice::Await(const std::string& prefix, size_t nth,
                                                       std::chrono::milliseconds timeout) {
  std::optional<common::MqttMessage> found;
  WaitUntil(
      [&] {
        const auto received = Received(prefix);
        if (received.size() > nth) {
          found = received[nth];
          return true;
        }
        return false;
      },
      timeout);
  return found;
}

std::vector<common::MqttMessage> SignedDevice::Received(const std::string& prefix) {
  const std::string want = "$oc/devices/" + id_ + "/sys/" + prefix;
  std::lock_guard lock(mu_);
  std::vector<common::MqttMessage> out;
  for (const auto& m : inbox_) {
    if (m.topic.starts_with(want)) {
      out.push_back(m);
    }
  }
  return out;
}

}  // namespace iot::testing
