// Topic rules of the broker plugin and the gateway's view of the same topics, for both dialects.
// Input: device '\n' topic '\n' payload, where device is a Huawei device id, or an Alink username
// `{deviceName}&{productKey}` (device id `{productKey}_{deviceName}`). Properties checked:
// - what the broker lets a device publish is relayed on its uplink partition and admitted by the
//   gateway as that device's message on that very topic (an Alink topic without LinkSDK's
//   `?_rid=`, naming the device's own productKey and deviceName), or rejected as too_long when it
//   is over the gateway's topic limits (the broker's ACL has none) or a sub-device report
//   (unsupported);
// - the broker relays a downlink only to the device it names, on the topic the gateway meant;
//   an Alink device gets every topic the gateway sends it (requests, `_reply` of its own `/sys/`
//   requests, shadow and NTP answers, custom messages);
// - nothing crashes on any topic (ACL, relay parsing, classification, AdmitUplink).
#include <algorithm>
#include <cstddef>
#include <string>
#include <variant>

#include "alink_client_id.h"
#include "alink_topics.h"
#include "client_id.h"
#include "fuzz_input.h"
#include "iot/device_gateway/alink/uplink_codec.h"
#include "iot/device_gateway/topics.h"
#include "iot/device_gateway/uplink.h"
#include "topic_rules.h"

namespace broker = iot::broker;
namespace gw = iot::device_gateway;
using iot::fuzz::Require;

namespace {

gw::RateLimiter& Limiter() {
  static gw::RateLimiter limiter(1e12);
  return limiter;
}

const gw::UplinkLimits& Limits() {
  static const gw::UplinkLimits limits{
      .max_payload_bytes = 1 << 20, .max_report_bytes = 1 << 20, .rate_per_second = 1e12};
  return limits;
}

/// A message the broker let through and the gateway refused: only for being over the gateway's
/// topic limits (too_long), or as an unsupported sub-device report.
void RequireOnlyLimitRejection(const gw::RejectedUplink& rejected, std::string_view topic) {
  if (rejected.reason == gw::RejectReason::kUnsupported) {
    Require(topic.find("/sys/gateway/sub_devices/") != std::string_view::npos);
    return;
  }
  const auto& limits = Limits();
  Require(rejected.reason == gw::RejectReason::kTooLong);
  Require(topic.size() > limits.max_topic_bytes || topic.size() > limits.max_id_bytes ||
          std::count(topic.begin(), topic.end(), '/') + 1 >
              static_cast<std::ptrdiff_t>(limits.max_topic_levels));
}

/// The gateway's Alink topic `alink_topic` for the device, through the broker's downlink relay:
/// delivered to that device as that topic.
void RequireAlinkDelivery(const std::string& device_id, const std::string& alink_topic) {
  const auto down =
      broker::ParseAlinkDownlinkTopic(gw::RelayTopic(gw::AlinkDeviceTopic(device_id, alink_topic)));
  Require(down.has_value());
  Require(down->device_id == device_id);
  Require(down->device_topic == alink_topic);
}

/// An Alink device (username `{deviceName}&{productKey}`) publishing on `topic`.
void CheckAlink(std::string_view username, const std::string& topic, const std::string& payload) {
  const auto name = broker::ParseAlinkUsername(username);
  if (!name.ok()) {
    return;
  }
  const std::string device_id = broker::AlinkDeviceId(*name);
  const std::string& pk = name->product_key;
  const std::string& dn = name->device_name;
  (void)broker::AlinkMaySubscribe(pk, dn, topic);
  (void)broker::AlinkMayReceive(pk, dn, topic);
  // Mosquitto refuses a PUBLISH whose topic has a wildcard or NUL before any ACL check.
  const bool publishable = topic.find_first_of(std::string_view("+#\0", 3)) == std::string::npos;
  const auto relay = broker::AlinkUplinkRelayTopic(device_id, pk, dn, topic, 16);
  if (publishable && broker::AlinkMayPublish(pk, dn, topic)) {
    Require(relay.has_value());
    const std::string_view stripped = broker::StripAlinkRequestId(topic);
    const auto admitted = gw::AdmitUplink(*relay, payload, Limits(), Limiter(), 0);
    if (const auto* message = std::get_if<gw::UplinkMessage>(&admitted)) {
      Require(message->device_id == device_id);
      Require(message->topic == stripped);
      const auto alink = gw::ParseAlinkTopic(message->topic);
      Require(alink.has_value());
      Require(alink->product_key == pk && alink->device_name == dn);
      // The `_reply` of a request on one of its /sys/ topics reaches it.
      if (message->topic.starts_with("/sys/")) {
        RequireAlinkDelivery(device_id, message->topic + "_reply");
      }
    } else {
      // The gateway's limits count the whole device topic, `$oc/devices/{id}/alink{T}`.
      RequireOnlyLimitRejection(std::get<gw::RejectedUplink>(admitted),
                                gw::DeviceTopicOfRelay(*relay).value_or(""));
    }
  }
  // What the gateway sends an Alink device (alink/downlink_codec.cpp, alink/uplink.cpp).
  const std::string sys = "/sys/" + pk + "/" + dn + "/";
  for (const std::string& sent :
       {sys + "thing/service/property/set", sys + "thing/service/property/get",
        sys + "rrpc/request/42", sys + "thing/service/reboot", sys + "thing/model/down_raw",
        "/" + pk + "/" + dn + "/user/a/b", "/shadow/get/" + pk + "/" + dn,
        "/ext/ntp/" + pk + "/" + dn + "/response"}) {
    RequireAlinkDelivery(device_id, sent);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& limiter = Limiter();
  const auto& limits = Limits();
  iot::fuzz::Fields fields(data, size);
  const std::string device_id(fields.Next());
  const std::string topic(fields.Next());
  const std::string payload(fields.Rest());

  // Every parser on the raw topic.
  (void)broker::DeviceMayReceive(device_id, topic);
  (void)broker::DeviceMaySubscribe(device_id, topic);
  (void)broker::IsDownlinkTopic(topic);
  (void)gw::ParseUplinkTopic(topic);
  (void)gw::DeviceTopicOfRelay(topic);
  (void)gw::AdmitUplink(topic, payload, limits, limiter, 0);
  if (const auto down = broker::ParseDownlinkTopic(topic)) {
    Require(broker::IsValidDeviceId(down->device_id));
    Require(down->device_topic == broker::DeviceTopicPrefix(down->device_id) + down->suffix);
    Require(broker::DeviceMayReceive(down->device_id, down->device_topic));
  }

  CheckAlink(device_id, topic, payload);
  if (!broker::IsValidDeviceId(device_id)) {
    return 0;
  }
  // Uplink: broker ACL -> relay topic -> gateway.
  const auto relay = broker::UplinkRelayTopic(device_id, topic, 16);
  if (broker::DeviceMayPublish(device_id, topic)) {
    Require(relay.has_value());
    Require(gw::DeviceTopicOfRelay(*relay) == topic);
    const auto admitted = gw::AdmitUplink(*relay, payload, limits, limiter, 0);
    if (const auto* message = std::get_if<gw::UplinkMessage>(&admitted)) {
      Require(message->device_id == device_id);
      Require(message->topic == topic);
    } else {
      // The broker's ACL has no length limits; the gateway's (topic bytes and levels, the ids in
      // it) reject such a message as too_long, counted — never as an unknown topic. Sub-device
      // reports are refused as unsupported (no gateway/sub-device relation in the registry yet).
      RequireOnlyLimitRejection(std::get<gw::RejectedUplink>(admitted), topic);
    }
  }
  // Downlink: gateway topic -> relay topic -> broker -> the same device and topic.
  for (const auto kind : {gw::DownlinkKind::kCommand, gw::DownlinkKind::kPropertiesSet,
                          gw::DownlinkKind::kPropertiesGet, gw::DownlinkKind::kMessageDown,
                          gw::DownlinkKind::kShadowResponse, gw::DownlinkKind::kEventDown}) {
    const std::string device_topic = gw::DownlinkTopic(kind, device_id, "42");
    const auto down = broker::ParseDownlinkTopic(gw::RelayTopic(device_topic));
    Require(down.has_value());
    Require(down->device_id == device_id);
    Require(down->device_topic == device_topic);
  }
  return 0;
}
