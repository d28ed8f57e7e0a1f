#pragma once

// The Alibaba "Alink" dialect (issue #17, /work/shared/ALINK.md): what an Alink device's uplink
// topic means, its request envelope `{"id","version","sys":{"ack"},"params","method"}`, the
// `_reply` it is answered with, and the mapping of its params onto the IoTDA shapes the rest of
// the platform uses (a TSL function block is a service: `{fb}:{id}` → service `{fb}`, property
// or event `{id}`; the default block → service `default`). Pure functions: no I/O.
//
// The broker plugin relays an Alink device's publish on topic T (any `?_rid=` suffix stripped)
// as `iot/up/{partition}/{device_id}/alink{T}`; the gateway answers through
// `$iot/down/{device_id}/alink{T'}` (AlinkDeviceTopic gives the `$oc/devices/...` form that
// RelayTopic turns into that).

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iot/thing_model/product_model.h"

namespace iot::device_gateway {

/// What an Alink uplink topic is for.
enum class AlinkFunction {
  kPropertyPost,       ///< /sys/{pk}/{dn}/thing/event/property/post
  kPropertyBatchPost,  ///< /sys/{pk}/{dn}/thing/event/property/batch/post
  kEventPost,          ///< /sys/{pk}/{dn}/thing/event/{identifier}/post
  kRawUp,              ///< /sys/{pk}/{dn}/thing/model/up_raw
  kCustom,             ///< /{pk}/{dn}/user/...
  kShadowUpdate,       ///< /shadow/update/{pk}/{dn} (update, get, delete)
  kNtpRequest,         ///< /ext/ntp/{pk}/{dn}/request
  kPropertySetReply,   ///< /sys/{pk}/{dn}/thing/service/property/set_reply
  kPropertyGetReply,   ///< /sys/{pk}/{dn}/thing/service/property/get_reply
  kServiceReply,       ///< /sys/{pk}/{dn}/thing/service/{identifier}_reply
  kRrpcResponse,       ///< /sys/{pk}/{dn}/rrpc/response/{messageId}
  kExtRrpcResponse,    ///< /ext/rrpc/{messageId}/sys/{pk}/{dn}/thing/service/{identifier}
  kDownRawReply,       ///< /sys/{pk}/{dn}/thing/model/down_raw_reply
  kUnsupported,        ///< another topic of the device (OTA, config, sub-devices, ...)
};

/// A parsed Alink topic; the views point into the topic string.
struct AlinkTopic {
  AlinkFunction function = AlinkFunction::kUnsupported;
  std::string_view topic;  ///< without a `?_rid=...` suffix
  std::string_view product_key;
  std::string_view device_name;
  std::string_view identifier;  ///< kEventPost, kServiceReply, kExtRrpcResponse
  std::string_view message_id;  ///< kRrpcResponse, kExtRrpcResponse
};

/// The prefix below the device id of a relayed Alink topic: `iot/up/{p}/{id}/alink{T}`.
inline constexpr std::string_view kAlinkRelayLevel = "alink";

/// Parses an Alibaba topic (starting with `/`); a `?_rid=...` in its last level is ignored
/// (common::StripAlinkRequestId, the broker's rule), any other `?` is part of the topic.
/// nullopt when it names no product key and device name; kUnsupported for a topic of the device
/// the gateway does not handle.
std::optional<AlinkTopic> ParseAlinkTopic(std::string_view topic);

/// `thing.event.property.post`, `thing.event.{id}.post`, ...: the method of a request topic
/// (LinkSDK 4.x sends none); "" for the functions without one.
std::string AlinkMethod(const AlinkTopic& topic);

/// Whether the function is the device's answer to a platform request (rate-limited apart).
bool IsAlinkResponse(AlinkFunction function);
/// Whether its payload is a property report (the report size limit applies).
bool IsAlinkReport(AlinkFunction function);

/// `$oc/devices/{device_id}/alink{alink_topic}`: the device topic whose RelayTopic is the relay
/// `$iot/down/{device_id}/alink{alink_topic}` the broker plugin delivers as `alink_topic`.
std::string AlinkDeviceTopic(std::string_view device_id, std::string_view alink_topic);

/// Alink result codes.
inline constexpr int kAlinkOk = 200;
inline constexpr int kAlinkBadRequest = 400;
inline constexpr int kAlinkInvalidParams = 460;

/// The envelope of an Alink request.
struct AlinkRequest {
  nlohmann::json id;  ///< exactly as sent (string or number); null when absent
  bool ack = true;    ///< false when `sys.ack` is 0
  nlohmann::json params;
};

/// The envelope fields of a parsed request document.
AlinkRequest ReadAlinkRequest(const nlohmann::json& document);
/// The `id` of a payload that did not parse (a top-level `"id"` string or number found by a
/// scan), or nullopt; also whether it asked for no reply (`"ack":0` anywhere).
std::optional<nlohmann::json> RecoverAlinkId(std::string_view payload, bool& ack);

/// `{"id":...,"code":...,"data":...,"message":...,"method":...,"version":"1.0"}`.
std::string AlinkReply(const nlohmann::json& id, int code, std::string_view message,
                       std::string_view method,
                       const nlohmann::json& data = nlohmann::json::object());

/// `{fb}:{id}` → (`fb`, `id`); `id` → (`default`, `id`).
std::pair<std::string_view, std::string_view> SplitAlinkIdentifier(std::string_view identifier);
/// The inverse: `default` + `id` → `id`, else `{service}:{id}`.
std::string AlinkIdentifier(std::string_view service_id, std::string_view name);

/// A wire value in the form the model's type takes: bool 0/1 → false/true, an enum or string
/// sent as a number → its decimal text, a DateTime sent as milliseconds → RFC 3339 UTC with
/// milliseconds. Anything else (and any value of an unknown property) as it is.
nlohmann::json AlinkToModelValue(const thing_model::Parameter* spec, nlohmann::json value);

/// `{"value": v, "time": ms}` (no other member): a params value with its time.
bool IsAlinkTimedValue(const nlohmann::json& value);

/// RFC 3339 UTC with milliseconds (`2026-11-26T17:42:48.123Z`) of a time in ms since the epoch.
std::string Rfc3339Millis(int64_t unix_ms);
/// A `time` of a params value: a number or a decimal string of milliseconds since the epoch.
std::optional<int64_t> AlinkTime(const nlohmann::json& value);

/// An Alink property post (or the properties of a batch post, or a shadow's reported state) as
/// an IoTDA property report: one service entry per (service, time), `event_time` the time in
/// RFC 3339 with milliseconds. `identifiers[i]` are the Alink names of entry `i`'s properties in
/// the order written.
struct AlinkReport {
  std::string report_json;  ///< `{"services":[...]}`; "" when nothing was given
  std::vector<std::string> service_ids;
  /// Shape problems found while mapping (a property whose value is no `{value,time}` in a batch,
  /// ...), named `params.{identifier}`.
  std::vector<std::string> errors;
};

/// `params` of a property post: `{"id": v}` or `{"id": {"value": v, "time": ms}}`.
AlinkReport AlinkPropertyReport(const thing_model::CompiledModel& model,
                                const nlohmann::json& params);
/// The `(value, time)` of each `{"value": v, "time": ms}` of an array of a batch post
/// (`params.properties.{id}` or `params.events.{id}`, named `where` in errors); an item without a
/// time, or a value that is no array, is an error appended to `errors`.
std::vector<std::pair<nlohmann::json, int64_t>> AlinkBatchItems(const nlohmann::json& values,
                                                                std::string_view where,
                                                                std::vector<std::string>& errors);
/// `params.properties` of a batch post: `{"id": [{"value": v, "time": ms}, ...]}`.
AlinkReport AlinkBatchReport(const thing_model::CompiledModel& model,
                             const nlohmann::json& properties);

/// A validation error path of a report built by the functions above
/// (`services[2].properties.temp`) in Alink terms (`params.fb:temp`).
std::string AlinkErrorPath(const AlinkReport& report, std::string_view path);

/// An Alink property map (`{"id": v, "fb:id": v}`, a get_reply's data) as IoTDA services
/// `[{"service_id","properties"}]`, values converted to the model's types.
nlohmann::json AlinkServices(const thing_model::CompiledModel& model, const nlohmann::json& data);

/// The IoTDA shadow get body (`{"shadow":[{"service_id","desired":{"properties"},
/// "reported":{"properties"},"version"}]}`) as the Alink shadow document
/// `{"method":"reply","payload":{"status":"success","state":{"desired","reported"},
/// "metadata":{...}},"version":N,"timestamp":seconds}`.
nlohmann::json AlinkShadowReply(const nlohmann::json& iotda_shadow, int64_t now_unix_ms);
/// The answer to a shadow update or delete: `{"method":"reply","payload":{"status":...,
/// "version":N} | {"status":"error","content":{"errorcode","errormessage"}},"timestamp":s}`.
nlohmann::json AlinkShadowAnswer(const std::optional<int64_t>& version, int64_t now_unix_ms,
                                 std::string_view error_code = {},
                                 std::string_view error_message = {});

}  // namespace iot::device_gateway
