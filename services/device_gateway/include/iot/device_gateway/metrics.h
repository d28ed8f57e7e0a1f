#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string_view>

#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {

/// Every metric of the gateway, built once from the registry and injected.
struct GatewayMetrics {
  explicit GatewayMetrics(prometheus::Registry& registry);

  void Accepted(std::string_view kind);
  void Rejected(RejectReason reason, double count = 1);

  /// iot_gateway_uplink_messages_total{kind}: handed to a shard (presence: kind="presence").
  prometheus::Family<prometheus::Counter>& uplink_messages;
  /// iot_gateway_uplink_rejected_total{reason}: per message, or per property / event for
  /// invalid_property / invalid_event.
  prometheus::Family<prometheus::Counter>& uplink_rejected;
  /// iot_gateway_uplink_queue_depth: messages queued in the shards, not yet handed on.
  prometheus::Gauge& queue_depth;
  /// iot_gateway_uplink_lost_total: acknowledged to the broker but not handed on (shutdown
  /// drain timed out).
  prometheus::Counter& lost;
  /// iot_gateway_downstream_call_duration_seconds{target}.
  prometheus::Family<prometheus::Histogram>& call_duration;
  /// iot_gateway_downstream_errors_total{target,code}: failed calls (each retry counts).
  prometheus::Family<prometheus::Counter>& call_errors;
  /// iot_gateway_downstream_dropped_total{target}: batches the owner refused for good
  /// (INVALID_ARGUMENT), logged.
  prometheus::Family<prometheus::Counter>& call_dropped;
  /// iot_gateway_downlink_publish_total{kind,result}: result online, offline, error.
  prometheus::Family<prometheus::Counter>& downlink;
  /// iot_gateway_broker_dropped_messages: the broker's own count of messages it dropped
  /// (`$SYS/broker/publish/messages/dropped`: queue limits reached).
  prometheus::Gauge& broker_dropped;
};

}  // namespace iot::device_gateway
