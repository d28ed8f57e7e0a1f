#include "iot/device_gateway/presence.h"

#include <nlohmann/json.hpp>

#include "iot/common/status.h"
#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {
namespace {

constexpr std::string_view kPresencePrefix = "$iot/presence/";

}  // namespace

absl::StatusOr<PresenceEvent> ParsePresence(std::string_view topic, std::string_view payload) {
  std::string_view rest = topic;
  if (rest.starts_with(kPresencePrefix)) {
    rest.remove_prefix(kPresencePrefix.size());
  } else if (rest.starts_with(kSharedPresencePrefix)) {
    rest = AfterPartition(rest.substr(kSharedPresencePrefix.size())).value_or("");
  } else {
    return common::InvalidField("topic", "not $iot/presence/{device_id}");
  }
  if (rest.empty() || rest.find('/') != std::string_view::npos) {
    return common::InvalidField("topic", "not $iot/presence/{device_id}");
  }
  const std::string device_id(rest);
  const auto body = nlohmann::json::parse(payload, nullptr, false);
  if (!body.is_object()) {
    return common::InvalidField("payload", "not a JSON object");
  }
  const std::string event = body.value("event", "");
  if (event != "connected" && event != "disconnected") {
    return common::InvalidField("event", "must be connected or disconnected");
  }
  if (body.value("device_id", device_id) != device_id) {
    return common::InvalidField("device_id", "differs from the topic's device id");
  }
  const std::string time = body.value("time", "");
  if (time.empty()) {
    return common::InvalidField("time", "is required");
  }
  return PresenceEvent{.message_id = {},
                       .device_id = device_id,
                       .online = event == "connected",
                       .time = time,
                       .reason = body.value("reason", ""),
                       .client_address = body.value("client_address", "")};
}

}  // namespace iot::device_gateway
