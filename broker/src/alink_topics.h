#pragma once

// Which topics an Alink device may use (broker/README.md, Topics of Alink devices), its uplink
// relay topic and the internal downlink topic for it. `pk` and `dn` are the device's own
// productKey and deviceName (its record's product and node id), never taken from a topic.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "iot/common/alink_topic.h"
#include "topic_rules.h"

namespace iot::broker {

/// Marks an Alink topic in the relay topics: the device's uplink on T is delivered as
/// `iot/up/{partition}/{device_id}/alink{T}`, the gateway's `$iot/down/{device_id}/alink{T}` is
/// delivered to the device as T (T starts with `/`).
inline constexpr std::string_view kAlinkRelayMarker = "alink";

/// `topic` without the `?_rid=...` that LinkSDK may append to the last level of a publish topic
/// (the gateway strips it by the same rule).
using common::StripAlinkRequestId;

/// Publish (after StripAlinkRequestId): `/sys/{pk}/{dn}/thing/...`,
/// `/sys/{pk}/{dn}/rrpc/response/{id}`,
/// `/{pk}/{dn}/user/...`, `/shadow/update/{pk}/{dn}`, `/ext/ntp/{pk}/{dn}/request`,
/// `/ext/rrpc/{id}/sys/{pk}/{dn}/...`.
bool AlinkMayPublish(std::string_view pk, std::string_view dn, std::string_view topic);

/// Subscribe: filters below `/sys/{pk}/{dn}/` or `/{pk}/{dn}/user/`, `/shadow/get/{pk}/{dn}`,
/// `/ext/ntp/{pk}/{dn}/response` and `/ext/rrpc/{id or +}/sys/{pk}/{dn}/...`, where everything
/// up to `{dn}` (the RRPC id level aside) is literal.
bool AlinkMaySubscribe(std::string_view pk, std::string_view dn, std::string_view filter);

/// Delivery to the device: a topic of the subscribe set above (the device's receive topics).
bool AlinkMayReceive(std::string_view pk, std::string_view dn, std::string_view topic);

/// `iot/up/{partition}/{device_id}/alink{T}` for a topic the device may publish (T = the topic
/// without `?_rid=...`); nullopt for any other.
std::optional<std::string> AlinkUplinkRelayTopic(std::string_view device_id, std::string_view pk,
                                                 std::string_view dn, std::string_view topic,
                                                 uint32_t partitions);

/// Parses `$iot/down/{device_id}/alink{T}`: `suffix` = `alink{T}`, `device_topic` = T. nullopt
/// unless T is one of the receive topics of the device id's own productKey and deviceName
/// (`{pk}_{dn}` = device_id; the connected device's own pair is checked again before delivery)
/// and has no wildcard.
std::optional<DownlinkTopic> ParseAlinkDownlinkTopic(std::string_view topic);

}  // namespace iot::broker
