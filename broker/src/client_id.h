#pragma once

// The Huawei IoTDA device identity carried in CONNECT: client id
// `{device_id}_0_{sign_type}_{YYYYMMDDHH}`, username = device id, password =
// hex HMAC-SHA256(key = YYYYMMDDHH, message = device secret).

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace iot::broker {

struct DeviceClientId {
  std::string device_id;
  /// 0: the timestamp is not checked against the clock; 1: it must be within the allowed skew.
  int sign_type = 0;
  /// The `YYYYMMDDHH` text exactly as sent: the HMAC key.
  std::string timestamp;
  /// Start of the hour the timestamp names, UTC.
  std::chrono::sys_seconds hour_start{};
};

/// Parses a device client id from the right (device ids contain `_` themselves): the last three
/// `_`-separated fields must be `0`, `0|1` and a valid UTC `YYYYMMDDHH`; the rest, which must be
/// a valid device id, is the device id. nullopt when the client id has another shape.
std::optional<DeviceClientId> ParseClientId(std::string_view client_id);

/// A device id that can be embedded in topics: 1..256 characters, none of them `/`, `+`, `#`,
/// whitespace or control characters (those would let one device's topics or filters reach
/// another's).
bool IsValidDeviceId(std::string_view device_id);

/// True when the hour [hour_start, hour_start + 1 h) is within `skew` of `now`.
bool TimestampWithinSkew(std::chrono::sys_seconds hour_start,
                         std::chrono::system_clock::time_point now, std::chrono::seconds skew);

/// `YYYYMMDDHH` of `now` in UTC, the timestamp a device with a correct clock sends.
std::string FormatClientTimestamp(std::chrono::system_clock::time_point now);

}  // namespace iot::broker
