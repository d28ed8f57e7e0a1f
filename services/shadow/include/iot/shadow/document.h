#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

/// The device shadow document and its encodings: the Redis hash of the live store, the JSON of
/// the durable copy, the IoTDA shapes devices and applications see.
namespace iot::shadow {

/// One desired or reported property value and when it was last set (unix ms).
struct PropertyValue {
  nlohmann::json value;
  int64_t time_ms = 0;
};

/// The desired or the reported side of one service.
struct ShadowSide {
  std::map<std::string, PropertyValue> properties;
  std::string event_time;  ///< yyyyMMddTHHmmssZ of the latest change ("" when none)
  int64_t event_ms = 0;
};

struct ServiceShadow {
  ShadowSide desired;
  ShadowSide reported;
};

/// The device's answer to the last property set the shadow pushed.
struct PropertySetRecord {
  std::string request_id;
  int result_code = 0;
  std::string result_desc;
  int64_t time_ms = 0;
};

/// One device's shadow: every service, one version per device.
struct DeviceShadow {
  std::string device_id;
  std::string tenant_id;
  int64_t version = 0;
  std::map<std::string, ServiceShadow> services;
  std::optional<PropertySetRecord> last_property_set;
  /// Write sequence of the live store (write-behind bookkeeping; not part of the document).
  int64_t write_seq = 0;
  bool exists = false;  ///< false: no shadow stored for the device
};

/// Fields of the Redis hash `shadow:dev:{device_id}`. Property fields are
/// `<kind>\0<service_id>\0<property>`, service event times `<kind>\0<service_id>`; values are
/// stamped `<unix ms> <text>` so that a Lua merge can compare times without parsing JSON.
/// NUL cannot occur in names: keys containing it are refused.
namespace field {
inline constexpr char kReported = 'r';
inline constexpr char kDesired = 'd';
inline constexpr char kReportedTime = 'R';
inline constexpr char kDesiredTime = 'D';
inline constexpr std::string_view kVersion = "v";
inline constexpr std::string_view kTenant = "t";
inline constexpr std::string_view kSize = "sz";
inline constexpr std::string_view kWriteSeq = "w";
inline constexpr std::string_view kPropertySet = "ps";
}  // namespace field

std::string PropertyField(char kind, std::string_view service_id, std::string_view property);
std::string ServiceTimeField(char kind, std::string_view service_id);
/// `<time_ms> <text>`.
std::string Stamp(int64_t time_ms, std::string_view text);

/// (field, stamped value) pairs of one side of one service, as the live store keeps them.
void AppendSideFields(const std::string& service_id, const ShadowSide& side, bool desired,
                      std::vector<std::pair<std::string, std::string>>& out);

/// The shadow from the hash's field/value pairs (HGETALL); unknown or broken fields are skipped.
DeviceShadow DecodeHash(const std::string& device_id,
                        const std::vector<std::pair<std::string, std::string>>& hash);

/// One side of every service as stored in PostgreSQL:
/// {"<service_id>":{"properties":{...},"metadata":{"<name>":ms},"event_time":"...","event_ms":ms}}.
nlohmann::json SideToJson(const std::map<std::string, ServiceShadow>& services, bool desired);
/// The inverse of SideToJson, into `services`; malformed entries are skipped.
void SideFromJson(const nlohmann::json& json, bool desired,
                  std::map<std::string, ServiceShadow>& services);
nlohmann::json PropertySetToJson(const PropertySetRecord& record);
std::optional<PropertySetRecord> PropertySetFromJson(const nlohmann::json& json);

/// Desired properties whose value differs from the reported one (numbers compare by value).
nlohmann::json Delta(const ServiceShadow& service);
/// Every service with a non-empty delta: the IoTDA property-set body
/// {"object_device_id":...,"services":[{"service_id","properties"}]}, or nullopt when the
/// delta is empty.
std::optional<nlohmann::json> PropertySetBody(const DeviceShadow& shadow);

/// The body of `.../sys/shadow/get/response/request_id=...` (DESIGN.md §3): one entry per
/// service (only `service_id` when not empty).
nlohmann::json DeviceGetResponse(const DeviceShadow& shadow, std::string_view service_id);

/// IoTDA's yyyyMMdd'T'HHmmss'Z' of a unix-ms time.
std::string IotdaTime(int64_t time_ms);
/// RFC 3339 with milliseconds, UTC.
std::string Rfc3339Time(int64_t time_ms);
/// Unix ms of yyyyMMdd'T'HHmmss'Z' or an ISO-8601 date-time with a zone; nullopt otherwise.
std::optional<int64_t> ParseEventTime(std::string_view text);
int64_t NowMs();

/// INVALID_ARGUMENT at `field` when `key` is empty or contains `.`, `$` or NUL.
absl::Status CheckKey(std::string_view field, std::string_view key);

}  // namespace iot::shadow
