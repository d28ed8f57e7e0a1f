#include "destinations/settings.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "iot/common/status.h"

namespace iot::rule_forwarding::settings {

absl::Status CheckKeys(const nlohmann::json& config,
                       std::initializer_list<std::string_view> known) {
  if (!config.is_object()) {
    return common::InvalidField("", "must be a JSON object");
  }
  for (const auto& [key, value] : config.items()) {
    bool found = false;
    for (std::string_view k : known) {
      found = found || k == key;
    }
    if (!found) {
      return common::InvalidField(key, fmt::format("unknown setting (known: {})",
                                                   fmt::join(known.begin(), known.end(), ", ")));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> String(const nlohmann::json& config, const std::string& key,
                                   bool required) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    if (required) {
      return common::InvalidField(key, "is required");
    }
    return std::string();
  }
  if (!it->is_string()) {
    return common::InvalidField(key, "must be a string");
  }
  if (required && it->get_ref<const std::string&>().empty()) {
    return common::InvalidField(key, "is required");
  }
  return it->get<std::string>();
}

absl::StatusOr<int64_t> Int(const nlohmann::json& config, const std::string& key, int64_t fallback,
                            int64_t min, int64_t max) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    return fallback;
  }
  if (!it->is_number_integer()) {
    return common::InvalidField(key, "must be an integer");
  }
  const int64_t value = it->get<int64_t>();
  if (value < min || value > max) {
    return common::InvalidField(key, fmt::format("must be between {} and {}", min, max));
  }
  return value;
}

bool IsIdentifier(std::string_view name) {
  if (name.empty() || name.size() > 63) {
    return false;
  }
  const auto alpha = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  };
  if (!alpha(name.front())) {
    return false;
  }
  for (char c : name) {
    if (!alpha(c) && !(c >= '0' && c <= '9')) {
      return false;
    }
  }
  return true;
}

std::string Expand(std::string_view text, std::string_view device_id, std::string_view product_id,
                   std::string_view tenant_id) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text.substr(i, 2) == "${") {
      const size_t end = text.find('}', i);
      if (end != std::string_view::npos) {
        const std::string_view name = text.substr(i + 2, end - i - 2);
        if (name == "device_id" || name == "product_id" || name == "tenant_id") {
          out += name == "device_id" ? device_id : name == "product_id" ? product_id : tenant_id;
          i = end + 1;
          continue;
        }
      }
    }
    out += text[i++];
  }
  return out;
}

absl::StatusOr<std::optional<DeviceDownTopic>> ClassifyRepublishTopic(std::string_view topic) {
  if (!topic.starts_with('$')) {
    return std::nullopt;
  }
  constexpr std::string_view kPrefix = "$oc/devices/";
  const auto refuse = [] {
    return common::InvalidField(
        "topic",
        "of the platform's '$' topics only $oc/devices/{device_id}/sys/messages/down and "
        "$oc/devices/{device_id}/user/{topic} are allowed");
  };
  if (!topic.starts_with(kPrefix)) {
    return refuse();
  }
  const std::string_view rest = topic.substr(kPrefix.size());
  const size_t slash = rest.find('/');
  if (slash == 0 || slash == std::string_view::npos) {
    return refuse();
  }
  const std::string_view device_id = rest.substr(0, slash);
  const std::string_view tail = rest.substr(slash);
  if (tail == "/sys/messages/down") {
    return DeviceDownTopic{.device_id = std::string(device_id), .user_topic = {}};
  }
  constexpr std::string_view kUser = "/user/";
  if (tail.starts_with(kUser) && tail.size() > kUser.size() && !tail.ends_with('/') &&
      tail.find("//") == std::string_view::npos) {
    return DeviceDownTopic{.device_id = std::string(device_id),
                           .user_topic = std::string(tail.substr(kUser.size()))};
  }
  return refuse();
}

absl::Status CheckDestinationHost(const common::EgressPolicy& egress, std::string_view host,
                                  const std::string& field) {
  auto addresses = egress.Resolve(host);
  if (addresses.status().code() == absl::StatusCode::kInvalidArgument) {
    return common::InvalidField(field, std::string(addresses.status().message()));
  }
  if (addresses.status().code() == absl::StatusCode::kPermissionDenied) {
    return common::InvalidField(
        field, fmt::format("{}: rule actions may not connect to the platform's own or internal "
                           "networks (an operator may allow addresses with {})",
                           std::string(addresses.status().message()), kAllowListVariable));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<common::IpAddress>> ResolveDestination(
    const common::EgressPolicy& egress, std::string_view host) {
  auto addresses = egress.Resolve(host);
  if (addresses.ok() || addresses.status().code() == absl::StatusCode::kUnavailable) {
    return addresses;
  }
  return absl::PermissionDeniedError(
      fmt::format("{}: refused, rule actions may not connect to the platform's own or internal "
                  "networks ({})",
                  std::string(addresses.status().message()), kAllowListVariable));
}

}  // namespace iot::rule_forwarding::settings
