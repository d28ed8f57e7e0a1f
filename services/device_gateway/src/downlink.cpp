#include "iot/device_gateway/downlink.h"

#include <fmt/format.h>

#include "iot/common/logging.h"
#include "iot/common/status.h"
#include "iot/device_gateway/alink/downlink_codec.h"
#include "iot/device_gateway/device_cache.h"
#include "iot/shadow/v1/shadow.pb.h"

namespace iot::device_gateway {
namespace {

bool NeedsRequestId(DownlinkKind kind) {
  return kind == DownlinkKind::kCommand || kind == DownlinkKind::kPropertiesSet ||
         kind == DownlinkKind::kPropertiesGet || kind == DownlinkKind::kShadowResponse;
}

/// A device id or request id that is one topic level without wildcards or control characters.
bool IsTopicLevel(std::string_view text) {
  if (text.empty() || text.size() > 256) {
    return false;
  }
  for (const char c : text) {
    if (c == '/' || c == '+' || c == '#' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return false;
    }
  }
  return true;
}

std::string_view KindName(DownlinkKind kind) {
  switch (kind) {
    case DownlinkKind::kCommand:
      return "command";
    case DownlinkKind::kPropertiesSet:
      return "properties_set";
    case DownlinkKind::kPropertiesGet:
      return "properties_get";
    case DownlinkKind::kMessageDown:
      return "message";
    case DownlinkKind::kShadowResponse:
      return "shadow_response";
    case DownlinkKind::kEventDown:
      return "event";
  }
  return "unknown";
}

}  // namespace

DownlinkService::DownlinkService(std::shared_ptr<DevicePublisher> publisher,
                                 GatewayMetrics& metrics, size_t max_payload_bytes,
                                 std::shared_ptr<DeviceCache> devices,
                                 std::shared_ptr<Downstream> owners)
    : publisher_(std::move(publisher)),
      metrics_(metrics),
      max_payload_bytes_(max_payload_bytes),
      devices_(std::move(devices)),
      owners_(std::move(owners)) {}

absl::StatusOr<DownlinkResult> DownlinkService::Publish(const DownlinkRequest& request) {
  if (!IsTopicLevel(request.device_id)) {
    return common::InvalidField("device_id", "must be a device id (no '/', '+', '#')");
  }
  if (NeedsRequestId(request.kind) && !IsTopicLevel(request.request_id)) {
    return common::InvalidField("request_id", "is required for this kind (no '/', '+', '#')");
  }
  if (request.qos != 0 && request.qos != 1) {
    return common::InvalidField("qos", "must be 0 or 1");
  }
  if (request.payload.size() > max_payload_bytes_) {
    return common::InvalidField("payload", fmt::format("{} bytes exceed the limit of {}",
                                                       request.payload.size(), max_payload_bytes_));
  }
  std::string user_topic;
  if (!request.user_topic.empty()) {
    if (request.kind != DownlinkKind::kMessageDown) {
      return common::InvalidField("user_topic", "only for messages");
    }
    const std::string_view rest = request.user_topic;
    if (rest.find_first_of("+#") != std::string_view::npos || rest.ends_with('/') ||
        rest.starts_with('/')) {
      return common::InvalidField("user_topic", "must be a topic below user/ without wildcards");
    }
    user_topic = rest.starts_with("user/") ? std::string(rest) : "user/" + std::string(rest);
  }
  if (devices_ != nullptr) {
    auto device = devices_->Get(request.device_id);
    if (device.ok() && (*device)->dialect == alink::kDialect) {
      DownlinkRequest normalized = request;
      normalized.user_topic = user_topic;
      return PublishAlink(normalized, **device);
    }
    // A device the registry does not know is published to as before: the plugin answers that
    // it is not connected. Any other failure leaves the dialect unknown.
    if (!device.ok() && device.status().code() != absl::StatusCode::kNotFound) {
      return absl::UnavailableError("device registry: " + std::string(device.status().message()));
    }
  }
  const std::string topic =
      DownlinkTopic(request.kind, request.device_id, request.request_id, user_topic);
  return Send(request, topic, topic, request.payload);
}

absl::StatusOr<DownlinkResult> DownlinkService::PublishAlink(const DownlinkRequest& request,
                                                             const DeviceInfo& device) {
  absl::StatusOr<alink::Downlink> downlink;
  if (request.kind == DownlinkKind::kPropertiesSet &&
      request.request_id.starts_with(alink::kShadowRequestPrefix)) {
    // Shadow's delta push: Alink devices take desired state as a shadow `control` carrying the
    // whole shadow and its version, which the push itself does not have.
    if (owners_ == nullptr) {
      return absl::FailedPreconditionError("no shadow to build the alink shadow control from");
    }
    shadow::v1::DeviceShadowGetRequest get;
    get.mutable_device()->set_tenant_id(device.tenant_id);
    get.mutable_device()->set_device_id(device.device_id);
    get.mutable_device()->set_product_id(device.product_id);
    get.mutable_device()->set_node_id(device.node_id);
    get.mutable_device()->set_dialect(device.dialect);
    get.set_request_id(request.request_id);
    auto shadow = owners_->GetDeviceShadow(get);
    if (!shadow.ok()) {
      return absl::UnavailableError("shadow: " + std::string(shadow.status().message()));
    }
    downlink = alink::ShadowControl(device, *shadow,
                                    std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
  } else {
    downlink = alink::Encode(request, device);
  }
  if (!downlink.ok()) {
    return downlink.status();
  }
  return Send(request, AlinkDeviceTopic(device.device_id, downlink->topic), downlink->topic,
              downlink->payload);
}

absl::StatusOr<DownlinkResult> DownlinkService::Send(const DownlinkRequest& request,
                                                     const std::string& publisher_topic,
                                                     const std::string& device_topic,
                                                     std::string_view payload) {
  auto online = publisher_->Publish(publisher_topic, payload, request.qos);
  const std::string kind(KindName(request.kind));
  if (!online.ok()) {
    metrics_.downlink.Add({{"kind", kind}, {"result", "error"}}).Increment();
    common::LogWarn("downlink not published", {{"device_id", request.device_id},
                                               {"topic", device_topic},
                                               {"error", std::string(online.status().message())}});
    return absl::UnavailableError("downlink not published: " +
                                  std::string(online.status().message()));
  }
  metrics_.downlink.Add({{"kind", kind}, {"result", *online ? "online" : "offline"}}).Increment();
  return DownlinkResult{.online = *online, .topic = device_topic};
}

}  // namespace iot::device_gateway
