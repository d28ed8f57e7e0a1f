#include "topic_rules.h"

#include <fmt/format.h>

#include <array>

#include "client_id.h"

namespace iot::broker {
namespace {

constexpr std::string_view kDevicesPrefix = "$oc/devices/";

constexpr std::array<std::string_view, 4> kUpTopics = {
    "sys/properties/report",
    "sys/messages/up",
    "sys/events/up",
    "sys/gateway/sub_devices/properties/report",
};

constexpr std::array<std::string_view, 4> kUpResponsePrefixes = {
    "sys/commands/response/request_id=",
    "sys/properties/set/response/request_id=",
    "sys/properties/get/response/request_id=",
    "sys/shadow/get/request_id=",
};

/// The part of `topic` after `$oc/devices/{device_id}/`, or nullopt when it is not below it.
std::optional<std::string_view> Remainder(std::string_view device_id, std::string_view topic) {
  if (!topic.starts_with(kDevicesPrefix)) {
    return std::nullopt;
  }
  topic.remove_prefix(kDevicesPrefix.size());
  if (!topic.starts_with(device_id)) {
    return std::nullopt;
  }
  topic.remove_prefix(device_id.size());
  if (!topic.starts_with('/')) {
    return std::nullopt;
  }
  topic.remove_prefix(1);
  return topic;
}

bool IsRequestId(std::string_view id) {
  return !id.empty() && id.find('/') == std::string_view::npos;
}

}  // namespace

std::string DeviceTopicPrefix(std::string_view device_id) {
  std::string prefix(kDevicesPrefix);
  prefix.append(device_id);
  prefix.push_back('/');
  return prefix;
}

bool DeviceMayPublish(std::string_view device_id, std::string_view topic) {
  const auto rest = Remainder(device_id, topic);
  if (!rest) {
    return false;
  }
  for (const auto up : kUpTopics) {
    if (*rest == up) {
      return true;
    }
  }
  for (const auto prefix : kUpResponsePrefixes) {
    if (rest->starts_with(prefix)) {
      return IsRequestId(rest->substr(prefix.size()));
    }
  }
  return rest->starts_with("user/") && rest->size() > 5;
}

bool DeviceMayReceive(std::string_view device_id, std::string_view topic) {
  const auto rest = Remainder(device_id, topic);
  return rest && !rest->empty();
}

bool DeviceMaySubscribe(std::string_view device_id, std::string_view filter) {
  const auto rest = Remainder(device_id, filter);
  if (!rest) {
    return false;
  }
  return *rest == "#" || (rest->starts_with("sys/") && rest->size() > 4) ||
         (rest->starts_with("user/") && rest->size() > 5);
}

bool IsDownlinkTopic(std::string_view topic) { return topic.starts_with(kDownlinkPrefix); }

uint32_t UplinkPartition(std::string_view device_id, uint32_t partitions) {
  uint32_t hash = 2166136261u;
  for (const char c : device_id) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 16777619u;
  }
  return partitions == 0 ? 0 : hash % partitions;
}

std::optional<std::string> UplinkRelayTopic(std::string_view device_id, std::string_view topic,
                                            uint32_t partitions) {
  const auto rest = Remainder(device_id, topic);
  if (!rest || rest->empty()) {
    return std::nullopt;
  }
  return fmt::format("{}{}/{}/{}", kUplinkPrefix, UplinkPartition(device_id, partitions), device_id,
                     *rest);
}

std::string PartitionedPresenceTopic(std::string_view device_id, uint32_t partitions) {
  return fmt::format("{}{}/{}", kSharedPresencePrefix, UplinkPartition(device_id, partitions),
                     device_id);
}

std::optional<DownlinkTopic> ParseDownlinkTopic(std::string_view topic) {
  if (!IsDownlinkTopic(topic)) {
    return std::nullopt;
  }
  topic.remove_prefix(kDownlinkPrefix.size());
  const size_t slash = topic.find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view device_id = topic.substr(0, slash);
  const std::string_view suffix = topic.substr(slash + 1);
  if (!IsValidDeviceId(device_id)) {
    return std::nullopt;
  }
  const bool known_root = (suffix.starts_with("sys/") && suffix.size() > 4) ||
                          (suffix.starts_with("user/") && suffix.size() > 5);
  if (!known_root) {
    return std::nullopt;
  }
  DownlinkTopic out{
      .device_id = std::string(device_id), .suffix = std::string(suffix), .device_topic = {}};
  out.device_topic = DeviceTopicPrefix(device_id);
  out.device_topic.append(suffix);
  return out;
}

}  // namespace iot::broker
