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
#include "iot/device_gateway/alink/uplink_codec.h"
#include "iot/device_gateway/device_cache.h"
#include "iot/device_gateway/downlink.h"

namespace iot::device_gateway::alink {

inline constexpr std::string_view kDialect = "alink";
/// Shadow's delta pushes are property sets with request ids of this prefix (docs/shadow.md).
inline constexpr std::string_view kShadowRequestPrefix = "shadow-";

/// A model value as Alink devices take it: a boolean as 0 / 1 (TSL bool), others unchanged.
/// `parameter` may be null (not in the model): the value is kept. The inverse of
/// AlinkToModelValue (alink.h).
nlohmann::json ToWire(const thing_model::Parameter* parameter, const nlohmann::json& value);

struct Downlink {
  std::string topic;    ///< the Alibaba topic T, e.g. /sys/{pk}/{dn}/thing/service/property/set
  std::string payload;  ///< what the device receives
};

/// The Alink form of an IoTDA-form downlink of `device` (not for shadow pushes: ShadowControl).
/// INVALID_ARGUMENT naming the field for what Alink cannot carry (shadow get responses and
/// events/down are IoTDA-only) or a payload that is not the services' IoTDA form.
absl::StatusOr<Downlink> Encode(const DownlinkRequest& request, const DeviceInfo& device);

/// Shadow's delta push for `device` as the `control` of /shadow/get/{pk}/{dn}: the Alink shadow
/// document of the device's whole shadow (`shadow_get_json`, shadow's device-get answer; as
/// AlinkShadowReply builds it) with method `control` and values in wire form.
absl::StatusOr<Downlink> ShadowControl(const DeviceInfo& device, std::string_view shadow_get_json,
                                       int64_t now_ms);

}  // namespace iot::device_gateway::alink
