#pragma once

// From one resolved device message to what each owner receives (DESIGN.md §2): validated
// property reports for shadow, IoTDA forwarding records for rule-forwarding, device responses
// for command-dispatch (or shadow for "shadow-" property sets), shadow gets and platform replies
// (time sync) to publish. Pure logic: no I/O.
//
// Message ids: what one device message becomes carries the message's own id (the broker
// plugin's, the same on every redelivery), so owners recognise a redelivered message. Within
// one owner an id is used once: a message's main record (report, event, message, response,
// status) has the message id itself, the validation_failed record of its invalid part
// `{id}/validation_failed`, and the validation_failed record of a record an owner refused
// `{record id}/rejected/{owner}`.

#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "iot/device_gateway/alink/uplink_codec.h"
#include "iot/device_gateway/device_cache.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/ports.h"
#include "iot/device_gateway/presence.h"
#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {

/// A message the gateway itself publishes to a device (through the plugin relay).
struct DeviceReply {
  std::string device_topic;
  std::string payload;
};

/// Everything a batch of messages produces, per owner, in arrival order.
struct Outputs {
  shadow::v1::ReportPropertiesRequest shadow_reports;
  std::vector<shadow::v1::PropertySetResult> shadow_set_results;
  std::vector<shadow::v1::DeviceShadowGetRequest> shadow_gets;
  device_gateway::v1::PresenceEvents presence;  ///< for shadow and command-dispatch
  command_dispatch::v1::CompleteRequestsRequest responses;
  rule_forwarding::v1::IngestRequest records;
  std::vector<DeviceReply> replies;
  /// Answers that confirm the device's message (Alink `_reply`s, shadow update answers): published
  /// only once every owner has what the message became, just before it is acknowledged to the
  /// broker (UplinkPipeline); a message handed on again after a crash is answered again.
  std::vector<DeviceReply> after_handoff;

  [[nodiscard]] bool empty() const;
  void Clear();
};

/// Ids for messages that came without the plugin's id (an older plugin, or none): `{prefix}-{n}`
/// (the prefix names the replica and its start). They are new on every delivery.
class MessageIds {
 public:
  explicit MessageIds(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Next();

 private:
  std::string prefix_;
  std::atomic<uint64_t> next_{0};
};

/// Suffix of the id of a validation_failed record.
inline constexpr std::string_view kValidationFailedSuffix = "/validation_failed";
inline constexpr std::string_view kRejectedSuffix = "/rejected";

/// Thread-safe (const apart from the counters it increments).
class UplinkProcessor {
 public:
  explicit UplinkProcessor(GatewayMetrics& metrics, UplinkLimits limits = {})
      : metrics_(metrics), limits_(limits) {}

  /// A device message (already admitted by AdmitUplink). Rejections are counted, logged and
  /// become validation_failed records in `out`.
  void Process(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  /// A message refused before its device was resolved.
  void Process(const DeviceInfo& device, const RejectedUplink& rejected, Outputs& out) const;
  /// A presence event, after thing-model recorded it.
  void Process(const DeviceInfo& device, const PresenceEvent& event, Outputs& out) const;

  /// A `device.event` / `validation_failed` record of message `message_id` (and the count and
  /// log line).
  void Reject(const DeviceInfo& device, std::string_view message_id, RejectReason reason,
              std::string_view topic, std::string_view detail, int64_t received_at_unix_ms,
              Outputs& out, double count = 1) const;
  /// The `validation_failed` record of a record `owner` refused for good (counted and logged
  /// by the caller).
  void OwnerRejected(const device_gateway::v1::DeviceRef& device, std::string_view owner,
                     const device_gateway::v1::RejectedRecord& rejected, std::string_view topic,
                     int64_t at_unix_ms, Outputs& out) const;

 private:
  void PropertiesReport(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  /// What HandOnReport found wrong: nothing (ok), some properties, or the whole report.
  struct ReportOutcome {
    size_t invalid = 0;  ///< properties refused (or 1 for a whole report)
    bool whole = false;
    std::string detail;  ///< the errors, joined
  };
  /// Validates an IoTDA-form property report, hands its valid part to shadow and rules (the
  /// record's topic is message.topic) and rejects the rest. `describe` words one error;
  /// `extra_errors` are problems found before (counted as invalid properties).
  ReportOutcome HandOnReport(
      const DeviceInfo& device, const UplinkMessage& message, std::string_view report_json,
      const std::function<std::string(const thing_model::ValidationError&)>& describe,
      const std::vector<std::string>& extra_errors, Outputs& out) const;
  // The Alink dialect (src/alink/uplink.cpp).
  void Alink(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  void AlinkPost(const DeviceInfo& device, const UplinkMessage& message, const AlinkTopic& topic,
                 Outputs& out) const;
  /// Validates and hands on the events of a post (`identifier` → its `{value,time}` or paras);
  /// returns the errors.
  std::vector<std::string> AlinkEvents(
      const DeviceInfo& device, const UplinkMessage& message,
      const std::vector<std::tuple<std::string, nlohmann::json, std::optional<int64_t>>>& events,
      Outputs& out) const;
  void AlinkShadow(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  void AlinkShadowUpdate(const DeviceInfo& device, const UplinkMessage& message,
                         const nlohmann::json& document, std::optional<int64_t> version,
                         int64_t now, Outputs& out) const;
  void AlinkResponse(const DeviceInfo& device, const UplinkMessage& message,
                     const AlinkTopic& topic, Outputs& out) const;
  void AlinkNtp(const DeviceInfo& device, const UplinkMessage& message, const AlinkTopic& topic,
                Outputs& out) const;
  void AlinkRaw(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  /// A device response in command-dispatch's (or, for `shadow-` property sets, shadow's) shape
  /// and its `device.command` / `response` record.
  void HandOnResponse(const DeviceInfo& device, const UplinkMessage& message, UplinkKind kind,
                      const std::string& request_id, nlohmann::json body, Outputs& out) const;
  void EventUp(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  void MessageUp(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  /// The payload of an events/up, response or shadow get within the limits (depth, counts,
  /// names, strings); nullopt after rejecting it (malformed or over a limit).
  /// `refusal`, when given, receives the rejection's detail.
  std::optional<nlohmann::json> ParseStructured(const DeviceInfo& device,
                                                const UplinkMessage& message, Outputs& out,
                                                std::string* refusal = nullptr) const;
  void Response(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  void ShadowGet(const DeviceInfo& device, const UplinkMessage& message, Outputs& out) const;
  static void AddRecord(const device_gateway::v1::DeviceRef& device, std::string message_id,
                        std::string_view resource, std::string_view event, std::string_view topic,
                        int64_t event_unix_ms, std::string_view body_json, Outputs& out);
  static void AddRecord(const DeviceInfo& device, std::string message_id, std::string_view resource,
                        std::string_view event, std::string_view topic, int64_t event_unix_ms,
                        std::string_view body_json, Outputs& out);

  GatewayMetrics& metrics_;
  const UplinkLimits limits_;
};

/// Fills a DeviceRef.
void SetDeviceRef(const DeviceInfo& device, device_gateway::v1::DeviceRef* ref);

/// Whether a rejection may be logged now: at most 20 lines a second over the whole gateway, so
/// that a flooding device cannot flood the log (the metric counts everything).
bool RejectionLogAllowed();

}  // namespace iot::device_gateway
