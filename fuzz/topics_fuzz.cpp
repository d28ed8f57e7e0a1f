// Topic rules of the broker plugin and the gateway's view of the same topics. Input: device id
// '\n' topic '\n' payload. Properties checked:
// - what the broker lets a device publish is relayed on its uplink partition and admitted by the
//   gateway as that device's message on that very topic, or rejected as too_long when it is over
//   the gateway's topic limits (the broker's ACL has none) or a sub-device report (unsupported);
// - the broker relays a downlink only to the device it names, on the topic the gateway meant;
// - nothing crashes on any topic (ACL, relay parsing, classification, AdmitUplink).
#include <algorithm>
#include <cstddef>
#include <string>
#include <variant>

#include "client_id.h"
#include "fuzz_input.h"
#include "iot/device_gateway/topics.h"
#include "iot/device_gateway/uplink.h"
#include "topic_rules.h"

namespace broker = iot::broker;
namespace gw = iot::device_gateway;
using iot::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static gw::RateLimiter limiter(1e12);
  static const gw::UplinkLimits limits{
      .max_payload_bytes = 1 << 20, .max_report_bytes = 1 << 20, .rate_per_second = 1e12};
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
      const auto& rejected = std::get<gw::RejectedUplink>(admitted);
      if (rejected.reason == gw::RejectReason::kUnsupported) {
        Require(topic.find("/sys/gateway/sub_devices/") != std::string::npos);
        return 0;
      }
      Require(rejected.reason == gw::RejectReason::kTooLong);
      Require(topic.size() > limits.max_topic_bytes || topic.size() > limits.max_id_bytes ||
              std::count(topic.begin(), topic.end(), '/') + 1 >
                  static_cast<std::ptrdiff_t>(limits.max_topic_levels));
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
