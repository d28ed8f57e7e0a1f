#pragma once

#include <optional>
#include <string>
#include <string_view>

/// Huawei IoTDA device topics (DESIGN.md §3): `$oc/devices/{device_id}/sys/...` and custom
/// `$oc/devices/{device_id}/user/...`.
namespace iot::device_gateway {

enum class UplinkKind {
  kPropertiesReport,         ///< sys/properties/report
  kGatewayPropertiesReport,  ///< sys/gateway/sub_devices/properties/report (gateway batch)
  kMessageUp,                ///< sys/messages/up
  kEventUp,                  ///< sys/events/up
  kCommandResponse,          ///< sys/commands/response/request_id={rid}
  kPropertiesSetResponse,    ///< sys/properties/set/response/request_id={rid}
  kPropertiesGetResponse,    ///< sys/properties/get/response/request_id={rid}
  kShadowGet,                ///< sys/shadow/get/request_id={rid}
  kCustom,                   ///< user/... (the device's own topics)
  kAlink,                    ///< alink{T}: an Alink device's Alibaba topic T (alink/uplink_codec.h)
};

enum class DownlinkKind {
  kCommand,         ///< sys/commands/request_id={rid}
  kPropertiesSet,   ///< sys/properties/set/request_id={rid}
  kPropertiesGet,   ///< sys/properties/get/request_id={rid}
  kMessageDown,     ///< sys/messages/down (or a custom user/... topic)
  kShadowResponse,  ///< sys/shadow/get/response/request_id={rid}
  kEventDown,       ///< sys/events/down
};

/// A classified uplink topic. Views point into the topic string.
struct UplinkTopic {
  UplinkKind kind;
  std::string_view device_id;
  std::string_view request_id;  ///< for the request_id= kinds
  std::string_view custom;      ///< for kCustom: the part after `user/`; kAlink: the Alibaba
                                ///< topic (from its leading `/`)
};

std::string_view UplinkKindName(UplinkKind kind);

/// Classifies an uplink topic; nullopt for anything that is not a device uplink topic
/// (malformed, a down topic, an empty device id or request id).
std::optional<UplinkTopic> ParseUplinkTopic(std::string_view topic);

/// The device-facing topic of a downlink: `$oc/devices/{id}/sys/commands/request_id={rid}` etc.
/// For kMessageDown a non-empty `custom_topic` (`user/...`) is used instead of messages/down.
std::string DownlinkTopic(DownlinkKind kind, std::string_view device_id,
                          std::string_view request_id, std::string_view custom_topic = {});

/// The internal topic the gateway publishes a downlink on, relayed by the broker plugin to the
/// device's connection: `$iot/down/{device_id}/{suffix after $oc/devices/{device_id}/}`.
std::string RelayTopic(std::string_view device_topic);

}  // namespace iot::device_gateway
