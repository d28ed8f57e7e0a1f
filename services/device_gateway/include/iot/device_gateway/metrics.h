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
  /// A record an owner refused for good (IngestAck.rejected), by the owner's reason.
  void Rejected(std::string_view owner_reason);

  /// iot_gateway_uplink_messages_total{kind}: handed to a shard (presence: kind="presence").
  prometheus::Family<prometheus::Counter>& uplink_messages;
  /// iot_gateway_uplink_rejected_total{reason}: per message, or per property / event for
  /// invalid_property / invalid_event; records owners refused count with the owner's reason.
  prometheus::Family<prometheus::Counter>& uplink_rejected;
  /// iot_gateway_uplink_queue_depth: messages taken from the broker, not yet finished (and so
  /// not yet acknowledged to it).
  prometheus::Gauge& queue_depth;
  /// iot_gateway_uplink_unacknowledged_total: messages left unfinished when the pipeline
  /// stopped (shutdown drain timed out): not acknowledged, the broker delivers them again.
  prometheus::Counter& unacknowledged;
  /// iot_gateway_dead_letters_total{target}: records stored in device_gateway.dead_letters.
  prometheus::Family<prometheus::Counter>& dead_letters;
  /// iot_gateway_downstream_call_duration_seconds{target}.
  prometheus::Family<prometheus::Histogram>& call_duration;
  /// iot_gateway_downstream_errors_total{target,code}: failed calls (each retry counts).
  prometheus::Family<prometheus::Counter>& call_errors;
  /// iot_gateway_downstream_dropped_total{target}: shadow gets refused for good (no answer is
  /// published; the device asks again), logged.
  prometheus::Family<prometheus::Counter>& call_dropped;
  /// iot_gateway_downlink_publish_total{kind,result}: result online, offline, error.
  prometheus::Family<prometheus::Counter>& downlink;
  /// iot_gateway_broker_dropped_messages: the broker's own count of messages it dropped
  /// (`$SYS/broker/publish/messages/dropped`: queue limits reached).
  prometheus::Gauge& broker_dropped;
};

}  // namespace iot::device_gateway
