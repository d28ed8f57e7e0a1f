#pragma once

// Which topics a device may use (DESIGN.md §3), and the internal downlink topic.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iot::broker {

/// `$oc/devices/{device_id}/`: everything a device may touch is below it.
std::string DeviceTopicPrefix(std::string_view device_id);

/// Up-topics of `device_id`: `sys/properties/report`, `sys/messages/up`, `sys/events/up`,
/// `sys/gateway/sub_devices/properties/report`, `sys/commands/response/request_id={x}`,
/// `sys/properties/set/response/request_id={x}`, `sys/properties/get/response/request_id={x}`,
/// `sys/shadow/get/request_id={x}` and custom topics `user/...`, all below its own prefix.
bool DeviceMayPublish(std::string_view device_id, std::string_view topic);

/// Delivery to the device: anything below its own prefix.
bool DeviceMayReceive(std::string_view device_id, std::string_view topic);

/// Subscriptions of the device: filters below its own prefix, where the prefix (including the
/// device id) is literal, followed by `#`, `sys/...` or `user/...`.
bool DeviceMaySubscribe(std::string_view device_id, std::string_view filter);

/// `$iot/down/`: the internal downlink topics, published by service accounts only and never
/// delivered to any subscriber.
inline constexpr std::string_view kDownlinkPrefix = "$iot/down/";
inline constexpr std::string_view kDownResultPrefix = "$iot/down-result/";
inline constexpr std::string_view kPresencePrefix = "$iot/presence/";

bool IsDownlinkTopic(std::string_view topic);

/// `iot/up/`: where a device's uplink on `$oc/devices/{id}/{rest}` is delivered, as
/// `iot/up/{partition}/{id}/{rest}`. Mosquitto 2.0.11 never delivers `$` topics to shared
/// subscriptions, and its shared subscriptions hand messages out one by one, not by device: so
/// the uplink is split into partitions by device id and each partition is consumed by one
/// gateway session at a time, which keeps every device's messages in order (broker/README.md,
/// Uplink). Devices can neither publish nor subscribe there (their ACL is below
/// `$oc/devices/{id}/`).
inline constexpr std::string_view kUplinkPrefix = "iot/up/";
/// `iot/presence/{partition}/{id}`: presence events again, in the device's uplink partition.
inline constexpr std::string_view kSharedPresencePrefix = "iot/presence/";
/// Retained `$iot/config/uplink_partitions` (decimal): the partition count the gateways use.
inline constexpr std::string_view kPartitionsTopic = "$iot/config/uplink_partitions";

/// The uplink partition of a device: FNV-1a (32 bit) of its id modulo `partitions`.
uint32_t UplinkPartition(std::string_view device_id, uint32_t partitions);

/// `iot/up/{partition}/{device_id}/{rest}` for the device's own `$oc/devices/{device_id}/{rest}`;
/// nullopt when `topic` is not below the device's prefix.
std::optional<std::string> UplinkRelayTopic(std::string_view device_id, std::string_view topic,
                                            uint32_t partitions);
/// `iot/presence/{partition}/{device_id}`.
std::string PartitionedPresenceTopic(std::string_view device_id, uint32_t partitions);

struct DownlinkTopic {
  std::string device_id;
  /// The part after `$oc/devices/{device_id}/`, e.g. `sys/commands/request_id=42`.
  std::string suffix;
  /// `$oc/devices/{device_id}/{suffix}`: the topic the device receives.
  std::string device_topic;
};

/// Parses `$iot/down/{device_id}/{suffix}`; nullopt for a malformed one (empty suffix, invalid
/// device id, suffix not below `sys/` or `user/`).
std::optional<DownlinkTopic> ParseDownlinkTopic(std::string_view topic);

}  // namespace iot::broker
