#include <fmt/format.h>
#include <grpcpp/create_channel.h>

#include <mutex>
#include <unordered_map>

#include "destinations/settings.h"
#include "iot/common/auth.h"
#include "iot/common/mqtt.h"
#include "iot/common/status.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"
#include "iot/rule_forwarding/destinations.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot::rule_forwarding {
namespace {

namespace gw = iot::device_gateway::v1;
namespace tm = iot::thing_model::v1;

constexpr size_t kMaxTopicBytes = 1024;
constexpr int kQosUnset = -1;

struct Target {
  std::string topic;
  int qos = kQosUnset;
};

absl::StatusOr<Target> ParseTarget(const nlohmann::json& config) {
  if (auto s = settings::CheckKeys(config, {"topic", "qos"}); !s.ok()) {
    return s;
  }
  auto topic = settings::String(config, "topic", true);
  if (!topic.ok()) {
    return topic.status();
  }
  if (topic->size() > kMaxTopicBytes || topic->find('\0') != std::string::npos) {
    return common::InvalidField("topic", "must be at most 1024 bytes without NUL");
  }
  if (auto device = settings::ClassifyRepublishTopic(*topic); !device.ok()) {
    return device.status();
  }
  if (topic->find_first_of("+#") != std::string::npos) {
    return common::InvalidField("topic", "must not contain the wildcards '+' or '#'");
  }
  auto qos = settings::Int(config, "qos", kQosUnset, 0, 1);
  if (!qos.ok()) {
    return qos.status();
  }
  return Target{.topic = *topic, .qos = static_cast<int>(*qos)};
}

class GatewayDownlink final : public DeviceDownlink {
 public:
  GatewayDownlink(const std::string& thing_model_addr, const std::string& gateway_addr,
                  std::string service_key, std::chrono::milliseconds cache_ttl)
      : thing_model_(tm::InternalThingModel::NewStub(
            grpc::CreateChannel(thing_model_addr, grpc::InsecureChannelCredentials()))),
        gateway_(gw::InternalDownlink::NewStub(
            grpc::CreateChannel(gateway_addr, grpc::InsecureChannelCredentials()))),
        service_key_(std::move(service_key)),
        cache_ttl_(cache_ttl) {}

  absl::Status Publish(const std::string& tenant_id, const std::string& device_id,
                       const std::string& user_topic, int qos, std::string payload) override {
    auto owner = TenantOf(device_id);
    if (!owner.ok()) {
      return owner.status();
    }
    if (*owner != tenant_id) {
      return absl::PermissionDeniedError(
          fmt::format("device '{}' is not a device of the rule's tenant", device_id));
    }
    gw::PublishRequest request;
    request.set_tenant_id(tenant_id);
    request.set_device_id(device_id);
    request.set_kind(gw::DOWNLINK_KIND_MESSAGE);
    request.set_user_topic(user_topic);
    request.set_qos(qos);
    request.set_payload(std::move(payload));
    grpc::ClientContext context;
    Prepare(context);
    gw::PublishResponse response;
    if (grpc::Status s = gateway_->Publish(&context, request, &response); !s.ok()) {
      return absl::UnavailableError(fmt::format("device-gateway: {}", s.error_message()));
    }
    if (!response.online()) {
      return absl::UnavailableError(fmt::format("device '{}' is offline", device_id));
    }
    return absl::OkStatus();
  }

 private:
  static constexpr size_t kMaxEntries = 100'000;
  struct Entry {
    std::string tenant_id;
    std::chrono::steady_clock::time_point expires;
  };

  void Prepare(grpc::ClientContext& context) const {
    common::SetBearer(context, service_key_);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  absl::StatusOr<std::string> TenantOf(const std::string& device_id) {
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mu_);
      if (auto it = tenants_.find(device_id); it != tenants_.end() && it->second.expires > now) {
        return it->second.tenant_id;
      }
    }
    tm::GetDeviceContextRequest request;
    request.set_device_id(device_id);
    grpc::ClientContext context;
    Prepare(context);
    tm::DeviceContext device;
    if (grpc::Status s = thing_model_->GetDeviceContext(&context, request, &device); !s.ok()) {
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        return absl::NotFoundError(fmt::format("device '{}' not found", device_id));
      }
      return absl::UnavailableError(fmt::format("thing-model: {}", s.error_message()));
    }
    std::lock_guard lock(mu_);
    if (tenants_.size() >= kMaxEntries) {
      tenants_.clear();
    }
    tenants_[device_id] = {.tenant_id = device.tenant_id(), .expires = now + cache_ttl_};
    return device.tenant_id();
  }

  std::unique_ptr<tm::InternalThingModel::Stub> thing_model_;
  std::unique_ptr<gw::InternalDownlink::Stub> gateway_;
  const std::string service_key_;
  const std::chrono::milliseconds cache_ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> tenants_;
};

class RepublishDestination final : public Destination {
 public:
  RepublishDestination(std::shared_ptr<common::MqttClient> mqtt,
                       std::shared_ptr<DeviceDownlink> downlink)
      : mqtt_(std::move(mqtt)), downlink_(std::move(downlink)) {}

  [[nodiscard]] std::string_view type() const override { return "republish"; }

  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& config) const override {
    return ParseTarget(config).status();
  }

  absl::Status Deliver(std::span<const Delivery> batch) override {
    static const nlohmann::json kEmpty = nlohmann::json::object();
    for (const Delivery& d : batch) {
      auto target = ParseTarget(d.action_config ? *d.action_config : kEmpty);
      if (!target.ok()) {
        return absl::InvalidArgumentError(std::string(target.status().message()));
      }
      const std::string topic =
          settings::Expand(target->topic, d.device_id, d.product_id, d.tenant_id);
      std::string body = d.payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      if (absl::Status s = DeliverOne(d.tenant_id, topic, target->qos, std::move(body)); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status DeliverOne(const std::string& tenant_id, const std::string& topic, int qos,
                          std::string body) {
    // The expanded topic is classified again: a `${...}` value may have changed its shape.
    auto device = settings::ClassifyRepublishTopic(topic);
    if (!device.ok()) {
      return absl::InvalidArgumentError(std::string(device.status().message()));
    }
    if (device->has_value()) {
      if (!downlink_) {
        return absl::FailedPreconditionError("no device downlink configured");
      }
      return downlink_->Publish(tenant_id, (*device)->device_id, (*device)->user_topic,
                                qos == kQosUnset ? 1 : qos, std::move(body));
    }
    if (!mqtt_) {
      return absl::FailedPreconditionError("no MQTT client configured");
    }
    return mqtt_->Publish(topic, body, qos == kQosUnset ? 0 : qos);
  }

  std::shared_ptr<common::MqttClient> mqtt_;
  std::shared_ptr<DeviceDownlink> downlink_;
};

}  // namespace

std::shared_ptr<DeviceDownlink> MakeGatewayDownlink(const std::string& thing_model_addr,
                                                    const std::string& device_gateway_addr,
                                                    std::string service_key,
                                                    std::chrono::milliseconds cache_ttl) {
  return std::make_shared<GatewayDownlink>(thing_model_addr, device_gateway_addr,
                                           std::move(service_key), cache_ttl);
}

std::shared_ptr<Destination> MakeRepublishDestination(std::shared_ptr<common::MqttClient> mqtt,
                                                      std::shared_ptr<DeviceDownlink> downlink) {
  return std::make_shared<RepublishDestination>(std::move(mqtt), std::move(downlink));
}

}  // namespace iot::rule_forwarding
