#include "iot/device_gateway/topics.h"

#include <array>

namespace iot::device_gateway {
namespace {

constexpr std::string_view kPrefix = "$oc/devices/";
constexpr std::string_view kRequestId = "request_id=";

bool ConsumePrefix(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) {
    return false;
  }
  s.remove_prefix(prefix.size());
  return true;
}

/// `rest` must be exactly `request_id={rid}` with a non-empty rid without '/'.
std::optional<std::string_view> RequestId(std::string_view rest) {
  if (!ConsumePrefix(rest, kRequestId) || rest.empty() ||
      rest.find('/') != std::string_view::npos) {
    return std::nullopt;
  }
  return rest;
}

struct FixedTopic {
  std::string_view suffix;
  UplinkKind kind;
};

constexpr std::array<FixedTopic, 4> kFixed = {{
    {"properties/report", UplinkKind::kPropertiesReport},
    {"gateway/sub_devices/properties/report", UplinkKind::kGatewayPropertiesReport},
    {"messages/up", UplinkKind::kMessageUp},
    {"events/up", UplinkKind::kEventUp},
}};

struct RequestTopic {
  std::string_view prefix;
  UplinkKind kind;
};

constexpr std::array<RequestTopic, 4> kRequests = {{
    {"commands/response/", UplinkKind::kCommandResponse},
    {"properties/set/response/", UplinkKind::kPropertiesSetResponse},
    {"properties/get/response/", UplinkKind::kPropertiesGetResponse},
    {"shadow/get/", UplinkKind::kShadowGet},
}};

}  // namespace

std::string_view UplinkKindName(UplinkKind kind) {
  switch (kind) {
    case UplinkKind::kPropertiesReport:
      return "properties_report";
    case UplinkKind::kGatewayPropertiesReport:
      return "gateway_properties_report";
    case UplinkKind::kMessageUp:
      return "message_up";
    case UplinkKind::kEventUp:
      return "event_up";
    case UplinkKind::kCommandResponse:
      return "command_response";
    case UplinkKind::kPropertiesSetResponse:
      return "properties_set_response";
    case UplinkKind::kPropertiesGetResponse:
      return "properties_get_response";
    case UplinkKind::kShadowGet:
      return "shadow_get";
    case UplinkKind::kCustom:
      return "custom";
    case UplinkKind::kAlink:
      return "alink";
  }
  return "unknown";
}

std::optional<UplinkTopic> ParseUplinkTopic(std::string_view topic) {
  std::string_view rest = topic;
  if (!ConsumePrefix(rest, kPrefix)) {
    return std::nullopt;
  }
  const size_t slash = rest.find('/');
  if (slash == 0 || slash == std::string_view::npos) {
    return std::nullopt;
  }
  UplinkTopic out{.kind = UplinkKind::kCustom,
                  .device_id = rest.substr(0, slash),
                  .request_id = {},
                  .custom = {}};
  rest.remove_prefix(slash + 1);
  if (ConsumePrefix(rest, "alink/")) {
    // The Alibaba topic keeps its leading '/': `alink/sys/...` is `/sys/...`.
    out.kind = UplinkKind::kAlink;
    out.custom = std::string_view(rest.data() - 1, rest.size() + 1);
    return out;
  }
  if (ConsumePrefix(rest, "user/")) {
    if (rest.empty()) {
      return std::nullopt;
    }
    out.custom = rest;
    return out;
  }
  if (!ConsumePrefix(rest, "sys/")) {
    return std::nullopt;
  }
  for (const FixedTopic& fixed : kFixed) {
    if (rest == fixed.suffix) {
      out.kind = fixed.kind;
      return out;
    }
  }
  for (const RequestTopic& request : kRequests) {
    std::string_view tail = rest;
    if (ConsumePrefix(tail, request.prefix)) {
      auto rid = RequestId(tail);
      if (!rid) {
        return std::nullopt;
      }
      out.kind = request.kind;
      out.request_id = *rid;
      return out;
    }
  }
  return std::nullopt;
}

std::string DownlinkTopic(DownlinkKind kind, std::string_view device_id,
                          std::string_view request_id, std::string_view custom_topic) {
  std::string topic = std::string(kPrefix).append(device_id).append("/");
  switch (kind) {
    case DownlinkKind::kCommand:
      return topic.append("sys/commands/request_id=").append(request_id);
    case DownlinkKind::kPropertiesSet:
      return topic.append("sys/properties/set/request_id=").append(request_id);
    case DownlinkKind::kPropertiesGet:
      return topic.append("sys/properties/get/request_id=").append(request_id);
    case DownlinkKind::kMessageDown:
      return custom_topic.empty() ? topic.append("sys/messages/down") : topic.append(custom_topic);
    case DownlinkKind::kShadowResponse:
      return topic.append("sys/shadow/get/response/request_id=").append(request_id);
    case DownlinkKind::kEventDown:
      return topic.append("sys/events/down");
  }
  return topic;
}

std::string RelayTopic(std::string_view device_topic) {
  std::string_view rest = device_topic;
  ConsumePrefix(rest, kPrefix);
  return std::string("$iot/down/").append(rest);
}

}  // namespace iot::device_gateway
