#pragma once

// What the MQTT handler does with a device message before it is queued: turn the broker's relay
// topic back into the device topic, classify it, apply the size limits and the per-device rate
// limit (DESIGN.md §3). Cheap and single-threaded: it runs on the MQTT network thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

#include "iot/common/rate_limiter.h"
#include "iot/device_gateway/topics.h"

namespace iot::device_gateway {

/// `iot/up/{partition}/`: where the broker plugin delivers a device's `$oc/devices/{id}/...`
/// uplink, split into partitions by device id so that one gateway session at a time consumes
/// each partition in order (broker/README.md, Uplink).
inline constexpr std::string_view kUplinkRelayPrefix = "iot/up/";
/// `iot/presence/{partition}/{id}`: the plugin's presence events, in the device's partition.
inline constexpr std::string_view kSharedPresencePrefix = "iot/presence/";
/// Retained by the plugin: how many uplink partitions it uses (decimal).
inline constexpr std::string_view kPartitionsTopic = "$iot/config/uplink_partitions";
/// The MQTT v5 user property in which the broker plugin gives every device uplink and presence
/// event it relays an id that stays the same when the broker delivers the message again (after
/// a gateway crash, a partition hand-over or a broker restart): broker/README.md, Message ids.
inline constexpr std::string_view kMessageIdProperty = "iot-message-id";
/// The MQTT v5 user property with the time the broker received a device uplink (milliseconds
/// since the epoch): the device's rate is measured at that time (broker/README.md, Message ids).
inline constexpr std::string_view kReceivedAtProperty = "iot-received-at";

/// `rest` after a leading `{partition}/` (decimal digits); nullopt when it has none.
std::optional<std::string_view> AfterPartition(std::string_view rest);

/// `$oc/devices/{rest}` for `iot/up/{partition}/{rest}`; nullopt for any other topic.
std::optional<std::string> DeviceTopicOfRelay(std::string_view relay_topic);

/// Why an uplink message was not handed on (the `reason` label of
/// iot_gateway_uplink_rejected_total).
enum class RejectReason {
  kUnknownTopic,     ///< not a device uplink topic of DESIGN.md §3
  kTooLarge,         ///< payload or property report over its limit
  kRateLimited,      ///< over the device's message rate
  kMalformed,        ///< not the JSON the topic needs
  kInvalidProperty,  ///< a property failed the model (counted per property)
  kInvalidEvent,     ///< an event failed the model (counted per event)
  kUnknownDevice,    ///< the registry does not know the device (deleted)
  kUnsupported,      ///< a topic the gateway does not handle yet
  kTooDeep,          ///< JSON nested deeper than IOT_JSON_MAX_DEPTH
  kTooMany,          ///< more services, properties, events or paras than a message may carry
  kTooLong,          ///< a topic, an id in it, a name or a string value over its length limit
};

std::string_view RejectReasonName(RejectReason reason);

/// What one device message may carry (docs/security.md lists each limit). Anything over a limit
/// rejects the whole message, before the JSON is parsed (size, depth, topic) or while the first
/// level of it is walked (counts, names, strings): no recursive work ever sees it.
struct UplinkLimits {
  size_t max_payload_bytes = 1024 * 1024;
  size_t max_report_bytes = 64 * 1024;
  /// Messages per second per device (token bucket; the burst is one second's worth). Responses
  /// to the platform's own requests (command, property set/get) have a bucket of their own at
  /// the same rate, so that a device's reports do not make it drop the answers it owes.
  double rate_per_second = 50;
  /// Nesting of any JSON payload (IOT_JSON_MAX_DEPTH).
  size_t max_json_depth = 64;
  /// The device topic `$oc/devices/{id}/...`: bytes and levels (`/`-separated parts). The
  /// longest platform topic is under 260 bytes and 8 levels (a 129-byte device id and a 64-byte
  /// request id in a property-set response).
  size_t max_topic_bytes = 512;
  size_t max_topic_levels = 16;
  /// A device id or request id in a topic (device ids are at most 129 bytes: product id and
  /// node id of up to 64 each).
  size_t max_id_bytes = 256;
  /// Service entries of a property report, events of an events/up message.
  size_t max_services = 100;
  /// Properties of one reported service entry, paras of one event.
  size_t max_properties = 500;
  /// Property names, service ids, event types, para names.
  size_t max_name_bytes = 256;
  /// A string value (property value, para, response field).
  size_t max_string_bytes = 64 * 1024;
};

/// Per-device token buckets (the MQTT thread owns it; the burst is one second's worth).
using RateLimiter = common::KeyedRateLimiter;

/// A device message accepted by the MQTT handler, on its way to the device's shard.
struct UplinkMessage {
  /// The broker plugin's id of the message (kMessageIdProperty), the same on every delivery;
  /// the ids of what the message becomes for the owners derive from it (processor.h).
  std::string message_id;
  UplinkKind kind = UplinkKind::kMessageUp;
  std::string device_id;
  /// The device's topic, `$oc/devices/{id}/...`; for kAlink the Alibaba topic (`/sys/...`).
  std::string topic;
  std::string request_id;
  std::string payload;
  int64_t received_at_unix_ms = 0;
};

/// A device message the MQTT handler refused, reported to applications as a
/// `device.event` / `validation_failed` record once the device is resolved.
struct RejectedUplink {
  std::string message_id;  ///< as UplinkMessage::message_id
  RejectReason reason = RejectReason::kMalformed;
  std::string device_id;
  std::string topic;
  std::string detail;
  int64_t received_at_unix_ms = 0;
};

/// Classifies one relayed message (`iot/up/...`) and applies the limits; the rate limit at
/// `received_at_unix_ms` (the broker's kReceivedAtProperty) when that is earlier than now. The
/// rejection carries no device id when the topic names none.
std::variant<UplinkMessage, RejectedUplink> AdmitUplink(std::string_view relay_topic,
                                                        std::string payload,
                                                        const UplinkLimits& limits,
                                                        RateLimiter& rate_limiter,
                                                        int64_t received_at_unix_ms);

/// Milliseconds since the epoch, now.
int64_t NowUnixMs();
/// IoTDA's `yyyyMMdd'T'HHmmss'Z'` of a time in milliseconds since the epoch.
std::string CompactUtc(int64_t unix_ms);
/// Milliseconds since the epoch of IoTDA's `yyyyMMddTHHmmssZ` or an RFC 3339 UTC time
/// (`2026-11-26T17:42:48.123Z`); nullopt for anything else.
std::optional<int64_t> ParseDeviceTime(std::string_view text);

}  // namespace iot::device_gateway
