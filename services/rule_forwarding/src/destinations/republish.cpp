#include "destinations/settings.h"
#include "iot/common/mqtt.h"
#include "iot/common/status.h"
#include "iot/rule_forwarding/destinations.h"

namespace iot::rule_forwarding {
namespace {

constexpr size_t kMaxTopicBytes = 1024;

struct Target {
  std::string topic;
  int qos = 0;
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
  if (topic->starts_with('$')) {
    return common::InvalidField(
        "topic", "topics starting with '$' are the platform's (device topics included)");
  }
  if (topic->find_first_of("+#") != std::string::npos) {
    return common::InvalidField("topic", "must not contain the wildcards '+' or '#'");
  }
  auto qos = settings::Int(config, "qos", 0, 0, 1);
  if (!qos.ok()) {
    return qos.status();
  }
  return Target{.topic = *topic, .qos = static_cast<int>(*qos)};
}

class RepublishDestination final : public Destination {
 public:
  explicit RepublishDestination(std::shared_ptr<common::MqttClient> mqtt)
      : mqtt_(std::move(mqtt)) {}

  [[nodiscard]] std::string_view type() const override { return "republish"; }

  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& config) const override {
    return ParseTarget(config).status();
  }

  absl::Status Deliver(std::span<const Delivery> batch) override {
    static const nlohmann::json kEmpty = nlohmann::json::object();
    if (!mqtt_) {
      return absl::FailedPreconditionError("no MQTT client configured");
    }
    for (const Delivery& d : batch) {
      auto target = ParseTarget(d.action_config ? *d.action_config : kEmpty);
      if (!target.ok()) {
        return absl::InvalidArgumentError(std::string(target.status().message()));
      }
      const std::string topic =
          settings::Expand(target->topic, d.device_id, d.product_id, d.tenant_id);
      const std::string body =
          d.payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      if (absl::Status s = mqtt_->Publish(topic, body, target->qos); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<common::MqttClient> mqtt_;
};

}  // namespace

std::shared_ptr<Destination> MakeRepublishDestination(std::shared_ptr<common::MqttClient> mqtt) {
  return std::make_shared<RepublishDestination>(std::move(mqtt));
}

}  // namespace iot::rule_forwarding
