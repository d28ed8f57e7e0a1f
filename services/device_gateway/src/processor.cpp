#include "iot/device_gateway/processor.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "iot/common/json_limits.h"
#include "iot/common/logging.h"
#include "iot/common/rejections.h"
#include "processor_internal.h"

namespace iot::device_gateway {
namespace {

using Json = nlohmann::json;

using internal::Dump;
using internal::JoinErrors;
using internal::kMaxErrorsInRecord;
constexpr std::string_view kShadowRequestPrefix = "shadow-";

command_dispatch::v1::ResponseKind ResponseKindOf(UplinkKind kind) {
  switch (kind) {
    case UplinkKind::kCommandResponse:
      return command_dispatch::v1::RESPONSE_KIND_COMMAND;
    case UplinkKind::kPropertiesSetResponse:
      return command_dispatch::v1::RESPONSE_KIND_PROPERTIES_SET;
    case UplinkKind::kPropertiesGetResponse:
      return command_dispatch::v1::RESPONSE_KIND_PROPERTIES_GET;
    default:
      return command_dispatch::v1::RESPONSE_KIND_UNSPECIFIED;
  }
}

std::string_view ResponseTypeName(UplinkKind kind) {
  switch (kind) {
    case UplinkKind::kCommandResponse:
      return "command";
    case UplinkKind::kPropertiesSetResponse:
      return "properties_set";
    default:
      return "properties_get";
  }
}

/// Why a device document is refused before anything else looks at it.
struct Refusal {
  RejectReason reason;
  std::string detail;
};

/// A device payload that must be JSON. Its nesting is measured before it is parsed: the parser is
/// iterative, but dump, copies and the validators recurse once per level.
std::variant<Json, Refusal> ParseDeviceJson(std::string_view payload, const UplinkLimits& limits) {
  if (common::JsonNestingDepth(payload, limits.max_json_depth) > limits.max_json_depth) {
    return Refusal{RejectReason::kTooDeep,
                   fmt::format("JSON nested deeper than {} levels", limits.max_json_depth)};
  }
  Json value = Json::parse(payload, nullptr, false);
  if (value.is_discarded()) {
    return Refusal{RejectReason::kMalformed, "not valid JSON"};
  }
  return value;
}

/// Member counts, names and string lengths anywhere in a parsed device document (its depth is
/// bounded already; the walk keeps its own stack all the same). `services`, when the document has
/// that array, counts against max_services.
std::optional<Refusal> CheckShape(const Json& root, const UplinkLimits& limits) {
  if (root.is_object()) {
    if (const auto it = root.find("services");
        it != root.end() && it->is_array() && it->size() > limits.max_services) {
      return Refusal{RejectReason::kTooMany, fmt::format("{} services exceed the limit of {}",
                                                         it->size(), limits.max_services)};
    }
  }
  std::vector<const Json*> stack = {&root};
  while (!stack.empty()) {
    const Json& value = *stack.back();
    stack.pop_back();
    if (value.is_object()) {
      if (value.size() > limits.max_properties) {
        return Refusal{RejectReason::kTooMany,
                       fmt::format("an object of {} members exceeds the limit of {}", value.size(),
                                   limits.max_properties)};
      }
      for (auto it = value.begin(); it != value.end(); ++it) {
        if (it.key().size() > limits.max_name_bytes) {
          return Refusal{RejectReason::kTooLong,
                         fmt::format("a name of {} bytes exceeds the limit of {}", it.key().size(),
                                     limits.max_name_bytes)};
        }
        stack.push_back(&it.value());
      }
    } else if (value.is_array()) {
      for (const Json& element : value) {
        stack.push_back(&element);
      }
    } else if (value.is_string() &&
               value.get_ref<const std::string&>().size() > limits.max_string_bytes) {
      return Refusal{
          RejectReason::kTooLong,
          fmt::format("a string of {} bytes exceeds the limit of {}",
                      value.get_ref<const std::string&>().size(), limits.max_string_bytes)};
    }
  }
  return std::nullopt;
}

/// The reason a whole report was refused for (thing_model::RefusesWholePayload kinds).
RejectReason WholeReportReason(thing_model::ErrorKind kind) {
  switch (kind) {
    case thing_model::ErrorKind::kTooLarge:
      return RejectReason::kTooLarge;
    case thing_model::ErrorKind::kTooDeep:
      return RejectReason::kTooDeep;
    case thing_model::ErrorKind::kTooMany:
      return RejectReason::kTooMany;
    case thing_model::ErrorKind::kOverlong:
      return RejectReason::kTooLong;
    default:
      return RejectReason::kMalformed;
  }
}

}  // namespace

namespace internal {

std::string Dump(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string JoinErrors(const std::vector<std::string>& errors, size_t total) {
  std::string out;
  for (const auto& e : errors) {
    if (!out.empty()) {
      out += "; ";
    }
    out += e;
  }
  if (total > errors.size()) {
    out += fmt::format(" (and {} more)", total - errors.size());
  }
  return out;
}

}  // namespace internal

bool Outputs::empty() const {
  return shadow_reports.reports_size() == 0 && shadow_set_results.empty() && shadow_gets.empty() &&
         presence.events_size() == 0 && responses.responses_size() == 0 &&
         records.records_size() == 0 && replies.empty() && after_handoff.empty();
}

void Outputs::Clear() {
  shadow_reports.Clear();
  shadow_set_results.clear();
  shadow_gets.clear();
  presence.Clear();
  responses.Clear();
  records.Clear();
  replies.clear();
  after_handoff.clear();
}

bool RejectionLogAllowed() {
  // As the owners' RejectionCounter: at most 20 lines a second, the metric counts everything.
  static common::LogThrottle throttle(20);
  return throttle.Allow();
}

std::string MessageIds::Next() { return fmt::format("{}-{}", prefix_, ++next_); }

void SetDeviceRef(const DeviceInfo& device, device_gateway::v1::DeviceRef* ref) {
  ref->set_tenant_id(device.tenant_id);
  ref->set_device_id(device.device_id);
  ref->set_product_id(device.product_id);
  ref->set_node_id(device.node_id);
  ref->set_dialect(device.dialect.empty() ? "huawei" : device.dialect);
}

void UplinkProcessor::AddRecord(const device_gateway::v1::DeviceRef& device, std::string message_id,
                                std::string_view resource, std::string_view event,
                                std::string_view topic, int64_t event_unix_ms,
                                std::string_view body_json, Outputs& out) {
  auto* record = out.records.add_records();
  record->set_message_id(std::move(message_id));
  *record->mutable_device() = device;
  record->set_resource(std::string(resource));
  record->set_event(std::string(event));
  record->set_topic(std::string(topic));
  record->set_event_time_unix_ms(event_unix_ms);
  const Json header = {{"device_id", device.device_id()},
                       {"product_id", device.product_id()},
                       {"node_id", device.node_id()},
                       {"tenant_id", device.tenant_id()},
                       {"dialect", device.dialect().empty() ? "huawei" : device.dialect()}};
  record->set_envelope_json(fmt::format(
      R"({{"resource":{},"event":{},"event_time":"{}","notify_data":{{"header":{},"body":{}}}}})",
      Json(resource).dump(), Json(event).dump(), CompactUtc(event_unix_ms), header.dump(),
      body_json));
}

void UplinkProcessor::AddRecord(const DeviceInfo& device, std::string message_id,
                                std::string_view resource, std::string_view event,
                                std::string_view topic, int64_t event_unix_ms,
                                std::string_view body_json, Outputs& out) {
  device_gateway::v1::DeviceRef ref;
  SetDeviceRef(device, &ref);
  AddRecord(ref, std::move(message_id), resource, event, topic, event_unix_ms, body_json, out);
}

void UplinkProcessor::Reject(const DeviceInfo& device, std::string_view message_id,
                             RejectReason reason, std::string_view topic, std::string_view detail,
                             int64_t received_at_unix_ms, Outputs& out, double count) const {
  if (count > 0) {
    metrics_.Rejected(reason, count);
  }
  if (RejectionLogAllowed()) {
    common::LogWarn("device uplink rejected", {{"device_id", device.device_id},
                                               {"message_id", std::string(message_id)},
                                               {"topic", std::string(topic)},
                                               {"reason", std::string(RejectReasonName(reason))},
                                               {"detail", std::string(detail)}});
  }
  const Json body = {{"topic", topic},
                     {"reason", RejectReasonName(reason)},
                     {"detail", detail},
                     {"received_time", CompactUtc(received_at_unix_ms)}};
  AddRecord(device, std::string(message_id).append(kValidationFailedSuffix), "device.event",
            "validation_failed", topic, received_at_unix_ms, Dump(body), out);
}

void UplinkProcessor::OwnerRejected(const device_gateway::v1::DeviceRef& device,
                                    std::string_view owner,
                                    const device_gateway::v1::RejectedRecord& rejected,
                                    std::string_view topic, int64_t at_unix_ms,
                                    Outputs& out) const {
  const Json body = {{"topic", topic},
                     {"reason", rejected.reason()},
                     {"detail", rejected.detail()},
                     {"refused_by", owner},
                     {"received_time", CompactUtc(at_unix_ms)}};
  AddRecord(device, fmt::format("{}{}/{}", rejected.message_id(), kRejectedSuffix, owner),
            "device.event", "validation_failed", topic, at_unix_ms, Dump(body), out);
}

void UplinkProcessor::Process(const DeviceInfo& device, const RejectedUplink& rejected,
                              Outputs& out) const {
  // Counted by the MQTT handler when it refused the message.
  Reject(device, rejected.message_id, rejected.reason, rejected.topic, rejected.detail,
         rejected.received_at_unix_ms, out, /*count=*/0);
}

void UplinkProcessor::Process(const DeviceInfo& device, const PresenceEvent& event,
                              Outputs& out) const {
  auto* presence = out.presence.add_events();
  presence->set_message_id(event.message_id);
  SetDeviceRef(device, presence->mutable_device());
  presence->set_online(event.online);
  presence->set_event_time(event.time);
  presence->set_reason(event.online ? "" : event.reason);
  presence->set_client_address(event.client_address);
  const int64_t at = ParseDeviceTime(event.time).value_or(NowUnixMs());
  Json body = {{"status", event.online ? "ONLINE" : "OFFLINE"}, {"reason", event.reason}};
  body[event.online ? "last_online_time" : "last_offline_time"] = CompactUtc(at);
  AddRecord(device, event.message_id, "device.status", "update", "", at, Dump(body), out);
}

void UplinkProcessor::Process(const DeviceInfo& device, const UplinkMessage& message,
                              Outputs& out) const {
  switch (message.kind) {
    case UplinkKind::kPropertiesReport:
      PropertiesReport(device, message, out);
      return;
    case UplinkKind::kEventUp:
      EventUp(device, message, out);
      return;
    case UplinkKind::kMessageUp:
    case UplinkKind::kCustom:
      MessageUp(device, message, out);
      return;
    case UplinkKind::kCommandResponse:
    case UplinkKind::kPropertiesSetResponse:
    case UplinkKind::kPropertiesGetResponse:
      Response(device, message, out);
      return;
    case UplinkKind::kShadowGet:
      ShadowGet(device, message, out);
      return;
    case UplinkKind::kAlink:
      Alink(device, message, out);
      return;
    case UplinkKind::kGatewayPropertiesReport:
      Reject(device, message.message_id, RejectReason::kUnsupported, message.topic,
             "sub-device property reports are not supported yet", message.received_at_unix_ms, out);
      return;
  }
}

void UplinkProcessor::PropertiesReport(const DeviceInfo& device, const UplinkMessage& message,
                                       Outputs& out) const {
  HandOnReport(
      device, message, message.payload,
      [](const thing_model::ValidationError& e) { return e.ToString(); }, {}, out);
}

UplinkProcessor::ReportOutcome UplinkProcessor::HandOnReport(
    const DeviceInfo& device, const UplinkMessage& message, std::string_view report_json,
    const std::function<std::string(const thing_model::ValidationError&)>& describe,
    const std::vector<std::string>& extra_errors, Outputs& out) const {
  thread_local thing_model::ReportResult result;
  device.validator->ValidateReport(report_json, result,
                                   {.check_required = false,
                                    .max_bytes = report_json.size() + 1,
                                    .max_errors = 100,
                                    .max_depth = limits_.max_json_depth,
                                    .max_services = limits_.max_services,
                                    .max_properties = limits_.max_properties,
                                    .max_name_bytes = limits_.max_name_bytes,
                                    .max_string_bytes = limits_.max_string_bytes});
  ReportOutcome outcome;
  if (!result.errors.empty() || !extra_errors.empty()) {
    outcome.whole = result.services.empty() && result.properties.empty() &&
                    !result.errors.empty() &&
                    thing_model::RefusesWholePayload(result.errors.front().kind);
    std::vector<std::string> texts(
        extra_errors.begin(), extra_errors.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                         extra_errors.size(), kMaxErrorsInRecord)));
    for (size_t i = 0; i < result.errors.size() && texts.size() < kMaxErrorsInRecord; ++i) {
      texts.push_back(describe(result.errors[i]));
    }
    const size_t total = result.error_count() + extra_errors.size();
    outcome.invalid = outcome.whole ? 1 : total;
    outcome.detail = JoinErrors(texts, total);
    Reject(device, message.message_id,
           outcome.whole ? WholeReportReason(result.errors.front().kind)
                         : RejectReason::kInvalidProperty,
           message.topic, outcome.detail, message.received_at_unix_ms, out,
           static_cast<double>(outcome.invalid));
  }
  // The valid part passes on (DESIGN.md §2), values exactly as reported.
  std::string services = "[";
  std::optional<int64_t> event_time;
  for (const auto& service : result.services) {
    if (service.property_count == 0) {
      continue;
    }
    if (services.size() > 1) {
      services += ',';
    }
    services += R"({"service_id":)" + Json(service.service_id).dump() + R"(,"properties":{)";
    bool first = true;
    for (const auto& property : result.PropertiesOf(service)) {
      if (!first) {
        services += ',';
      }
      first = false;
      services += Json(property.name).dump();
      services += ':';
      services.append(property.value);
    }
    services += '}';
    if (!service.event_time.empty()) {
      services += R"(,"event_time":)" + Json(service.event_time).dump();
      if (!event_time) {
        event_time = ParseDeviceTime(service.event_time);
      }
    }
    services += '}';
  }
  services += ']';
  if (services.size() == 2) {
    return outcome;  // nothing valid
  }
  auto* report = out.shadow_reports.add_reports();
  report->set_message_id(message.message_id);
  SetDeviceRef(device, report->mutable_device());
  report->set_services_json(services);
  report->set_received_at_unix_ms(message.received_at_unix_ms);
  AddRecord(device, message.message_id, "device.property", "report", message.topic,
            event_time.value_or(message.received_at_unix_ms), R"({"services":)" + services + "}",
            out);
  return outcome;
}

namespace {

/// The $time_sync service's time_sync_response to a time_sync_request event.
void ReplyTimeSync(const std::string& device_id, const Json& body, const Json& paras,
                   int64_t received_at_unix_ms, Outputs& out) {
  Json reply_paras = {{"server_recv_time", received_at_unix_ms}, {"server_send_time", NowUnixMs()}};
  if (paras.is_object() && paras.contains("device_send_time")) {
    reply_paras["device_send_time"] = paras["device_send_time"];
  }
  const Json reply = {{"object_device_id", body.value("object_device_id", Json(device_id))},
                      {"services",
                       {{{"service_id", "$time_sync"},
                         {"event_type", "time_sync_response"},
                         {"event_time", CompactUtc(NowUnixMs())},
                         {"paras", reply_paras}}}}};
  out.replies.push_back({.device_topic = DownlinkTopic(DownlinkKind::kEventDown, device_id, ""),
                         .payload = Dump(reply)});
}

}  // namespace

void UplinkProcessor::EventUp(const DeviceInfo& device, const UplinkMessage& message,
                              Outputs& out) const {
  auto parsed = ParseStructured(device, message, out);
  if (!parsed) {
    return;
  }
  const Json& body = *parsed;
  if (!body.is_object() || !body.contains("services") || !body["services"].is_array()) {
    Reject(device, message.message_id, RejectReason::kMalformed, message.topic,
           "events/up needs a JSON object with a services array", message.received_at_unix_ms, out);
    return;
  }
  Json valid = Json::array();
  std::vector<std::string> errors;
  size_t invalid = 0;
  std::optional<int64_t> event_time;
  const auto& services = body["services"];
  for (size_t i = 0; i < services.size(); ++i) {
    const Json& entry = services[i];
    const std::string where = fmt::format("services[{}]", i);
    if (!entry.is_object() || !entry.contains("service_id") || !entry["service_id"].is_string() ||
        !entry.contains("event_type") || !entry["event_type"].is_string()) {
      ++invalid;
      errors.push_back(where + ": needs service_id and event_type strings");
      continue;
    }
    const std::string service_id = entry["service_id"];
    const std::string event_type = entry["event_type"];
    const Json paras = entry.contains("paras") ? entry["paras"] : Json();
    if (!paras.is_null() && !paras.is_object()) {
      ++invalid;
      errors.push_back(where + ".paras: must be an object");
      continue;
    }
    if (service_id.starts_with('$')) {
      // IoTDA system services ($time_sync, $sdk_info, $ota, $log, ...): not in product models.
      if (service_id == "$time_sync" && event_type == "time_sync_request") {
        ReplyTimeSync(device.device_id, body, paras, message.received_at_unix_ms, out);
      }
    } else {
      const auto result = device.validator->ValidateEvent(service_id, event_type, paras);
      if (!result.ok()) {
        ++invalid;
        for (const auto& e : result.errors) {
          errors.push_back(where + ": " + e.ToString());
        }
        continue;
      }
    }
    if (!event_time && entry.contains("event_time") && entry["event_time"].is_string()) {
      event_time = ParseDeviceTime(entry["event_time"].get<std::string>());
    }
    valid.push_back(entry);
  }
  if (invalid > 0) {
    if (errors.size() > kMaxErrorsInRecord) {
      errors.resize(kMaxErrorsInRecord);
    }
    Reject(device, message.message_id, RejectReason::kInvalidEvent, message.topic,
           JoinErrors(errors, errors.size()), message.received_at_unix_ms, out,
           static_cast<double>(invalid));
  }
  if (valid.empty()) {
    return;
  }
  Json forwarded = {{"services", std::move(valid)}};
  if (body.contains("object_device_id") && body["object_device_id"].is_string()) {
    forwarded["object_device_id"] = body["object_device_id"];
  }
  AddRecord(device, message.message_id, "device.event", "report", message.topic,
            event_time.value_or(message.received_at_unix_ms), Dump(forwarded), out);
}

std::optional<Json> UplinkProcessor::ParseStructured(const DeviceInfo& device,
                                                     const UplinkMessage& message, Outputs& out,
                                                     std::string* refusal_detail) const {
  if (message.payload.empty() && message.kind != UplinkKind::kEventUp &&
      message.kind != UplinkKind::kAlink) {
    return Json::object();  // responses and shadow gets may come without a body
  }
  auto parsed = ParseDeviceJson(message.payload, limits_);
  std::optional<Refusal> refusal;
  if (auto* refused = std::get_if<Refusal>(&parsed)) {
    refusal = std::move(*refused);
  } else {
    refusal = CheckShape(std::get<Json>(parsed), limits_);
  }
  if (refusal) {
    Reject(device, message.message_id, refusal->reason, message.topic, refusal->detail,
           message.received_at_unix_ms, out);
    if (refusal_detail != nullptr) {
      *refusal_detail = refusal->detail;
    }
    return std::nullopt;
  }
  return std::get<Json>(std::move(parsed));
}

void UplinkProcessor::MessageUp(const DeviceInfo& device, const UplinkMessage& message,
                                Outputs& out) const {
  // Any bytes (DESIGN.md §3): JSON stays JSON, anything else is carried as a string. Only a
  // payload that is JSON can be too deep: other bytes that happen to hold many brackets are
  // carried like any others (the check of a whole document is iterative).
  Json content;
  if (common::JsonNestingDepth(message.payload, limits_.max_json_depth) > limits_.max_json_depth) {
    if (Json::accept(message.payload)) {
      Reject(device, message.message_id, RejectReason::kTooDeep, message.topic,
             fmt::format("JSON nested deeper than {} levels", limits_.max_json_depth),
             message.received_at_unix_ms, out);
      return;
    }
    content = message.payload;
  } else {
    content = Json::parse(message.payload, nullptr, false);
    if (content.is_discarded()) {
      content = message.payload;
    }
  }
  const Json body = {{"topic", message.topic}, {"content", std::move(content)}};
  AddRecord(device, message.message_id, "device.message", "report", message.topic,
            message.received_at_unix_ms, Dump(body), out);
}

void UplinkProcessor::Response(const DeviceInfo& device, const UplinkMessage& message,
                               Outputs& out) const {
  auto parsed = ParseStructured(device, message, out);
  if (!parsed) {
    return;
  }
  Json body = *std::move(parsed);
  if (!body.is_object()) {
    Reject(device, message.message_id, RejectReason::kMalformed, message.topic,
           "a response must be a JSON object", message.received_at_unix_ms, out);
    return;
  }
  HandOnResponse(device, message, message.kind, message.request_id, std::move(body), out);
}

void UplinkProcessor::HandOnResponse(const DeviceInfo& device, const UplinkMessage& message,
                                     UplinkKind kind, const std::string& request_id, Json body,
                                     Outputs& out) const {
  const std::string payload_json = Dump(body);
  if (kind == UplinkKind::kPropertiesSetResponse && request_id.starts_with(kShadowRequestPrefix)) {
    shadow::v1::PropertySetResult result;
    result.set_message_id(message.message_id);
    SetDeviceRef(device, result.mutable_device());
    result.set_request_id(request_id);
    result.set_payload_json(payload_json);
    result.set_received_at_unix_ms(message.received_at_unix_ms);
    out.shadow_set_results.push_back(std::move(result));
  } else {
    auto* response = out.responses.add_responses();
    response->set_message_id(message.message_id);
    SetDeviceRef(device, response->mutable_device());
    response->set_kind(ResponseKindOf(kind));
    response->set_request_id(request_id);
    response->set_payload_json(payload_json);
    response->set_received_at_unix_ms(message.received_at_unix_ms);
  }
  const Json record = {
      {"request_id", request_id}, {"type", ResponseTypeName(kind)}, {"response", std::move(body)}};
  AddRecord(device, message.message_id, "device.command", "response", message.topic,
            message.received_at_unix_ms, Dump(record), out);
}

void UplinkProcessor::ShadowGet(const DeviceInfo& device, const UplinkMessage& message,
                                Outputs& out) const {
  const auto body = ParseStructured(device, message, out);
  if (!body) {
    return;
  }
  if (!body->is_object()) {
    Reject(device, message.message_id, RejectReason::kMalformed, message.topic,
           "a shadow get must be a JSON object", message.received_at_unix_ms, out);
    return;
  }
  shadow::v1::DeviceShadowGetRequest request;
  SetDeviceRef(device, request.mutable_device());
  request.set_request_id(message.request_id);
  if (body->contains("service_id") && (*body)["service_id"].is_string()) {
    request.set_service_id((*body)["service_id"].get<std::string>());
  }
  out.shadow_gets.push_back(std::move(request));
}

}  // namespace iot::device_gateway
