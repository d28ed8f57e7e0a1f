#include "iot/device_gateway/uplink_intake.h"

#include <algorithm>
#include <charconv>

#include "iot/common/logging.h"
#include "iot/device_gateway/presence.h"

namespace iot::device_gateway {

int64_t ReceivedAt(const common::MqttDelivery& delivery, int64_t now_unix_ms) {
  const std::string* stamped = delivery.UserProperty(kReceivedAtProperty);
  if (stamped == nullptr) {
    return now_unix_ms;
  }
  int64_t at = 0;
  const char* end = stamped->data() + stamped->size();
  const auto [parsed_to, error] = std::from_chars(stamped->data(), end, at);
  if (error != std::errc() || parsed_to != end || at <= 0) {  // all of it, a positive number
    return now_unix_ms;
  }
  return std::min(at, now_unix_ms);
}

UplinkIntake::UplinkIntake(Submit submit, std::shared_ptr<GatewayMetrics> metrics,
                           UplinkLimits limits, AckToken ack)
    : submit_(std::move(submit)),
      metrics_(std::move(metrics)),
      limits_(limits),
      rate_limiter_(limits.rate_per_second),
      ack_(std::move(ack)) {}

void UplinkIntake::OnDelivery(common::MqttDelivery&& delivery) {
  UplinkPipeline::Ack ack;
  if (delivery.token != 0) {  // QoS 0 has nothing to acknowledge
    ack = [ack = ack_, token = delivery.token] { ack(token); };
  }
  const std::string* id = delivery.UserProperty(kMessageIdProperty);
  std::string message_id = id != nullptr ? *id : std::string();
  if (delivery.topic.starts_with(kSharedPresencePrefix)) {
    OnPresence(delivery, std::move(message_id), std::move(ack));
    return;
  }
  auto admitted = AdmitUplink(delivery.topic, std::move(delivery.payload), limits_, rate_limiter_,
                              ReceivedAt(delivery, NowUnixMs()));
  std::visit([&](auto& item) { item.message_id = std::move(message_id); }, admitted);
  if (auto* rejected = std::get_if<RejectedUplink>(&admitted)) {
    metrics_->Rejected(rejected->reason);
    submit_(std::move(*rejected), std::move(ack));  // a validation_failed record
    return;
  }
  auto& message = std::get<UplinkMessage>(admitted);
  metrics_->Accepted(UplinkKindName(message.kind));
  submit_(std::move(message), std::move(ack));
}

void UplinkIntake::OnPresence(const common::MqttDelivery& delivery, std::string message_id,
                              UplinkPipeline::Ack ack) {
  auto event = ParsePresence(delivery.topic, delivery.payload);
  if (!event.ok()) {
    metrics_->Rejected(RejectReason::kMalformed);
    common::LogWarn("presence event rejected",
                    {{"topic", delivery.topic}, {"error", std::string(event.status().message())}});
    if (ack) {
      ack();  // nothing to hand on
    }
    return;
  }
  event->message_id = std::move(message_id);
  metrics_->Accepted("presence");
  submit_(*std::move(event), std::move(ack));
}

}  // namespace iot::device_gateway
