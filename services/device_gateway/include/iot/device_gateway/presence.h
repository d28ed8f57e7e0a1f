#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace iot::device_gateway {

/// A connect or disconnect of a device, as the broker plugin publishes it on
/// `$iot/presence/{device_id}` (broker/README.md).
struct PresenceEvent {
  std::string message_id;  ///< the broker plugin's id of the event (uplink.h kMessageIdProperty)
  std::string device_id;
  bool online = false;
  std::string time;    ///< RFC 3339 with milliseconds
  std::string reason;  ///< connect, connection_closed, replaced, frozen, deleted
  std::string client_address;
};

/// INVALID_ARGUMENT naming what is wrong for a topic or payload that is not a presence event.
/// The topic is `$iot/presence/{device_id}` or its shareable twin `iot/presence/{device_id}`.
absl::StatusOr<PresenceEvent> ParsePresence(std::string_view topic, std::string_view payload);

}  // namespace iot::device_gateway
