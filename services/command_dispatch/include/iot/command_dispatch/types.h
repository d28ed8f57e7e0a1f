#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace iot::command_dispatch {

/// What a request is. Sync kinds wait for the device's response in the API call; the queued
/// kinds (messages, async commands) wait in PostgreSQL for the device to be online.
enum class Kind : std::uint8_t {
  kCommand,        ///< sync CreateCommand
  kPropertiesSet,  ///< sync UpdateProperties
  kPropertiesGet,  ///< sync ListProperties
  kMessage,        ///< CreateMessage
  kAsyncCommand,   ///< CreateAsyncCommand
};

/// "command", "properties_set", ... as stored.
std::string_view KindName(Kind kind);
absl::StatusOr<Kind> ParseKind(std::string_view name);
/// Commands, property set and property get wait for a response in the call.
bool IsSync(Kind kind);

/// Statuses, as IoTDA names them.
namespace status {
inline constexpr std::string_view kPending = "PENDING";
inline constexpr std::string_view kSent = "SENT";
inline constexpr std::string_view kDelivered = "DELIVERED";
inline constexpr std::string_view kSuccessful = "SUCCESSFUL";
inline constexpr std::string_view kFailed = "FAILED";
inline constexpr std::string_view kTimeout = "TIMEOUT";
inline constexpr std::string_view kExpired = "EXPIRED";
}  // namespace status

/// True for a status a kind can have (filters of the list calls).
bool IsStatusOf(Kind kind, std::string_view status);

struct StatusChange {
  std::string status;
  std::string time;  ///< RFC 3339 UTC
  std::string detail;
};

/// One request to a device, as recorded.
struct RequestRecord {
  std::string request_id;
  std::string tenant_id;
  std::string device_id;
  Kind kind = Kind::kCommand;
  std::string service_id;
  std::string command_name;
  std::string name;     ///< message name
  std::string body;     ///< paras / services / message JSON as given
  std::string raw;      ///< a raw message's bytes
  std::string topic;    ///< custom message topic
  std::string payload;  ///< the downlink payload
  std::string send_strategy;
  int64_t expire_seconds = 0;  ///< TTL / expire_time
  std::string status;
  std::optional<std::string> result;  ///< the device's response JSON
  std::string error;
  std::string created_time;
  std::string sent_time;
  std::string delivered_time;
  std::string response_time;
  std::string finished_time;
  std::string owner;                  ///< sync kinds: the replica whose call waits for it
  std::vector<StatusChange> history;  ///< filled by Show only
};

template <typename T>
struct Page {
  std::vector<T> items;
  std::string next_marker;  ///< empty on the last page
};

/// A device's answer to a request, as the gateway hands it over.
struct DeviceResponse {
  std::string device_id;
  std::string request_id;
  std::string payload_json;
  std::string message_id;  ///< the gateway's id of the uplink message (for rejections)
};

/// A device's connect or disconnect, from the gateway.
struct DevicePresence {
  std::string message_id;
  std::string device_id;
  bool online = false;
};

/// What a waiting sync call receives.
struct Completion {
  std::string request_id;
  Kind kind = Kind::kCommand;
  std::string status;  ///< SUCCESSFUL or FAILED
  std::string payload_json;
  std::string owner;  ///< the replica whose call waits for it (RequestRecord::owner)
};

}  // namespace iot::command_dispatch
