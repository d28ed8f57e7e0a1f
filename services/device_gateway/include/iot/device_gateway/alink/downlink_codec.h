#pragma once

// Downlink to devices of the Alink dialect (Alibaba Cloud IoT's device SDKs, docs/alink.md).
// The services build every downlink in IoTDA form (command-dispatch's command, property set/get
// and message payloads, shadow's delta push); for a device of an alink product the gateway
// turns it into the Alibaba topic and payload here, so no service needs a dialect branch:
//
// | IoTDA downlink                        | Alink topic                                    |
// |---------------------------------------|------------------------------------------------|
// | command, model call_type "sync"       | /sys/{pk}/{dn}/rrpc/request/{request_id}       |
// | command, otherwise                    | /sys/{pk}/{dn}/thing/service/{identifier}      |
// | properties set                        | /sys/{pk}/{dn}/thing/service/property/set      |
// | properties set by the shadow (shadow-)| /shadow/get/{pk}/{dn} (method control)         |
// | properties get                        | /sys/{pk}/{dn}/thing/service/property/get      |
// | message with a user topic             | /{pk}/{dn}/user/{topic}                        |
// | message                               | /sys/{pk}/{dn}/thing/model/down_raw            |
//
// `{pk}` is the product id (the productKey), `{dn}` the node id (the deviceName). Requests carry
// the platform's request id as `id` (a decimal string, as the C SDKs need), so the device's
// `_reply` / RRPC response completes the request with that id.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "iot/device_gateway/device_cache.h"
#include "iot/device_gateway/downlink.h"

namespace iot::device_gateway::alink {

inline constexpr std::string_view kDialect = "alink";
/// Shadow's delta pushes are property sets with request ids of this prefix (docs/shadow.md).
inline constexpr std::string_view kShadowRequestPrefix = "shadow-";

/// The Alibaba identifier of a property, command or event of a model service: the default
/// function block (service `default`) has plain names, a custom block `{service}:{name}`.
std::string WireName(std::string_view service_id, std::string_view name);

/// A model value as Alink devices take it: a boolean as 0 / 1 (TSL bool), others unchanged.
/// `parameter` may be null (not in the model): the value is kept.
nlohmann::json ToWire(const thing_model::Parameter* parameter, const nlohmann::json& value);

/// What DevicePublisher::Publish takes for the Alink topic `alink_topic` of a device:
/// `$oc/devices/{device_id}/alink{T}`, which RelayTopic() makes the broker plugin's
/// `$iot/down/{device_id}/alink{T}`; the plugin delivers it to the device as T.
std::string PublisherTopic(std::string_view device_id, std::string_view alink_topic);

struct Downlink {
  std::string topic;    ///< the Alibaba topic T, e.g. /sys/{pk}/{dn}/thing/service/property/set
  std::string payload;  ///< what the device receives
};

/// The Alink form of an IoTDA-form downlink of `device` (not for shadow pushes: ShadowControl).
/// INVALID_ARGUMENT naming the field for what Alink cannot carry (shadow get responses and
/// events/down are IoTDA-only) or a payload that is not the services' IoTDA form.
absl::StatusOr<Downlink> Encode(const DownlinkRequest& request, const DeviceInfo& device);

/// An Alink shadow document `{"method","payload":{"status":"success","state":{"desired",
/// "reported"},"metadata":{...}},"version","timestamp"}` from shadow's answer to a device's
/// shadow get (`{"shadow":[{"service_id","desired":{"properties","event_time"},"reported":...,
/// "version"}]}`): names and values in wire form, timestamps in seconds. `method`: "control"
/// pushes desired to the device, "reply" answers its get.
nlohmann::ordered_json ShadowDocument(std::string_view method, const nlohmann::json& shadow_get,
                                      const thing_model::CompiledModel& model, int64_t now_ms);

/// Shadow's delta push for `device` as the `control` of /shadow/get/{pk}/{dn}, built from the
/// device's whole shadow (`shadow_get_json`, shadow's device-get answer).
absl::StatusOr<Downlink> ShadowControl(const DeviceInfo& device, std::string_view shadow_get_json,
                                       int64_t now_ms);

}  // namespace iot::device_gateway::alink
