#include "iot/device_gateway/metrics.h"

#include <string>

#include "iot/common/metrics.h"

namespace iot::device_gateway {

GatewayMetrics::GatewayMetrics(prometheus::Registry& registry)
    : uplink_messages(prometheus::BuildCounter()
                          .Name("iot_gateway_uplink_messages_total")
                          .Help("Device messages accepted and queued for their owners, by kind")
                          .Register(registry)),
      uplink_rejected(prometheus::BuildCounter()
                          .Name("iot_gateway_uplink_rejected_total")
                          .Help("Rejected device messages (invalid_property: properties, "
                                "invalid_event: events), by reason")
                          .Register(registry)),
      queue_depth(prometheus::BuildGauge()
                      .Name("iot_gateway_uplink_queue_depth")
                      .Help("Device messages taken from the broker and not yet finished (not "
                            "yet acknowledged to it)")
                      .Register(registry)
                      .Add({})),
      unacknowledged(prometheus::BuildCounter()
                         .Name("iot_gateway_uplink_unacknowledged_total")
                         .Help("Messages left unfinished when the gateway stopped: not "
                               "acknowledged, the broker delivers them again")
                         .Register(registry)
                         .Add({})),
      dead_letters(prometheus::BuildCounter()
                       .Name("iot_gateway_dead_letters_total")
                       .Help("Records no owner would take, stored in device_gateway.dead_letters, "
                             "by target")
                       .Register(registry)),
      call_duration(prometheus::BuildHistogram()
                        .Name("iot_gateway_downstream_call_duration_seconds")
                        .Help("Latency of calls to the owners of device data, by target")
                        .Register(registry)),
      call_errors(prometheus::BuildCounter()
                      .Name("iot_gateway_downstream_errors_total")
                      .Help("Failed calls to the owners of device data (retried), by target, code")
                      .Register(registry)),
      call_dropped(prometheus::BuildCounter()
                       .Name("iot_gateway_downstream_dropped_total")
                       .Help("Shadow gets refused for good (no answer published), by target")
                       .Register(registry)),
      downlink(prometheus::BuildCounter()
                   .Name("iot_gateway_downlink_publish_total")
                   .Help("Downlink publishes, by kind and result (online, offline, error)")
                   .Register(registry)),
      broker_dropped(prometheus::BuildGauge()
                         .Name("iot_gateway_broker_dropped_messages")
                         .Help("Messages the broker dropped at its queue limits "
                               "($SYS/broker/publish/messages/dropped)")
                         .Register(registry)
                         .Add({})) {}

void GatewayMetrics::Accepted(std::string_view kind) {
  uplink_messages.Add({{"kind", std::string(kind)}}).Increment();
}

void GatewayMetrics::Rejected(RejectReason reason, double count) {
  uplink_rejected.Add({{"reason", std::string(RejectReasonName(reason))}}).Increment(count);
}

void GatewayMetrics::Rejected(std::string_view owner_reason) {
  uplink_rejected.Add({{"reason", owner_reason.empty() ? "rejected" : std::string(owner_reason)}})
      .Increment();
}

}  // namespace iot::device_gateway
