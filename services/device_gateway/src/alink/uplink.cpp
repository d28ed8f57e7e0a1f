// The Alink dialect's part of UplinkProcessor: an Alibaba device's uplink (alink/uplink_codec.h)
// becomes the same records, reports and responses as IoTDA uplink, and its `_reply` is queued to be
// published once the owners have them (Outputs::after_handoff).
#include <fmt/format.h>

#include "../processor_internal.h"
#include "iot/common/crypto.h"
#include "iot/device_gateway/alink/uplink_codec.h"
#include "iot/device_gateway/processor.h"

namespace iot::device_gateway {
namespace {

using Json = nlohmann::json;
using internal::Dump;
using internal::JoinErrors;
using internal::kMaxErrorsInRecord;

/// Queues the `_reply` of a request, unless it asked for none (`sys.ack` 0) or has no id.
void Answer(const DeviceInfo& device, const AlinkTopic& topic, const Json& id, bool ack, int code,
            std::string_view text, Outputs& out, const Json& data = Json::object()) {
  if (!ack || id.is_null()) {
    return;
  }
  out.after_handoff.push_back(
      {.device_topic = AlinkDeviceTopic(device.device_id, std::string(topic.topic) + "_reply"),
       .payload = AlinkReply(id, code, text, AlinkMethod(topic), data)});
}

/// The `/shadow/get/{pk}/{dn}` device topic answers to shadow updates go on.
std::string ShadowTopic(const DeviceInfo& device) {
  return AlinkDeviceTopic(device.device_id,
                          fmt::format("/shadow/get/{}/{}", device.product_id, device.node_id));
}

/// Answers a shadow update with an error (`code` and `text`).
void AnswerShadowError(const DeviceInfo& device, int64_t now, std::string_view code,
                       std::string_view text, Outputs& out) {
  out.after_handoff.push_back({.device_topic = ShadowTopic(device),
                               .payload = AlinkShadowAnswer(std::nullopt, now, code, text).dump()});
}

/// The response kind and request id of a device's answer to a platform request.
UplinkKind ResponseKind(AlinkFunction function) {
  switch (function) {
    case AlinkFunction::kPropertySetReply:
      return UplinkKind::kPropertiesSetResponse;
    case AlinkFunction::kPropertyGetReply:
      return UplinkKind::kPropertiesGetResponse;
    default:
      return UplinkKind::kCommandResponse;
  }
}

/// IoTDA's result_code: 0 for Alink's 200, the device's code otherwise.
Json ResultOf(int code, const Json& document) {
  Json out = {{"result_code", code == kAlinkOk ? 0 : code}};
  if (const auto message = document.find("message");
      message != document.end() && message->is_string()) {
    out["result_desc"] = *message;
  } else if (code == kAlinkOk) {
    out["result_desc"] = "success";
  }
  return out;
}

/// What an Alink property or event post carries.
struct AlinkPosted {
  AlinkReport report;
  std::vector<std::tuple<std::string, Json, std::optional<int64_t>>> events;
  std::vector<std::string> event_errors;  ///< events of a batch post without {value, time}
};

/// Reads the `params` of a post into `posted`, or says why they are not what `topic`'s
/// function takes.
std::optional<std::string> ReadAlinkPost(const thing_model::CompiledModel& model,
                                         const AlinkTopic& topic, const Json& params,
                                         AlinkPosted& posted) {
  switch (topic.function) {
    case AlinkFunction::kPropertyPost:
      if (!params.is_object()) {
        return "params: must be an object of properties";
      }
      posted.report = AlinkPropertyReport(model, params);
      return std::nullopt;
    case AlinkFunction::kPropertyBatchPost: {
      if (!params.is_object()) {
        return "params: must be an object with properties and events";
      }
      const Json properties = params.value("properties", Json::object());
      const Json events = params.value("events", Json::object());
      if (!properties.is_object() || !events.is_object()) {
        return "params.properties and params.events: must be objects";
      }
      posted.report = AlinkBatchReport(model, properties);
      for (const auto& [identifier, values] : events.items()) {
        for (auto& [value, time] :
             AlinkBatchItems(values, "params.events." + identifier, posted.event_errors)) {
          posted.events.emplace_back(identifier, std::move(value), time);
        }
      }
      return std::nullopt;
    }
    default: {  // kEventPost: params are the event's output, plain or as {value, time}
      std::optional<int64_t> time;
      Json paras = params;
      if (IsAlinkTimedValue(paras)) {
        if (paras.contains("time")) {
          time = AlinkTime(paras["time"]);
        }
        paras = Json(paras["value"]);
      }
      posted.events.emplace_back(std::string(topic.identifier), std::move(paras), time);
      return std::nullopt;
    }
  }
}

}  // namespace

void UplinkProcessor::Alink(const DeviceInfo& device, const UplinkMessage& message,
                            Outputs& out) const {
  const auto topic = ParseAlinkTopic(message.topic);
  // The broker relays a device's own topics only; anything else is refused here too.
  if (!topic || topic->product_key != device.product_id || topic->device_name != device.node_id) {
    Reject(device, message.message_id, RejectReason::kUnknownTopic, message.topic,
           "not an Alink topic of this device", message.received_at_unix_ms, out);
    return;
  }
  switch (topic->function) {
    case AlinkFunction::kPropertyPost:
    case AlinkFunction::kPropertyBatchPost:
    case AlinkFunction::kEventPost:
      AlinkPost(device, message, *topic, out);
      return;
    case AlinkFunction::kRawUp:
      AlinkRaw(device, message, out);
      return;
    case AlinkFunction::kCustom:
    case AlinkFunction::kDownRawReply:
      MessageUp(device, message, out);
      return;
    case AlinkFunction::kShadowUpdate:
      AlinkShadow(device, message, out);
      return;
    case AlinkFunction::kNtpRequest:
      AlinkNtp(device, message, *topic, out);
      return;
    case AlinkFunction::kPropertySetReply:
    case AlinkFunction::kPropertyGetReply:
    case AlinkFunction::kServiceReply:
    case AlinkFunction::kRrpcResponse:
    case AlinkFunction::kExtRrpcResponse:
      AlinkResponse(device, message, *topic, out);
      return;
    case AlinkFunction::kUnsupported:
      Reject(device, message.message_id, RejectReason::kUnsupported, message.topic,
             "an Alink function the platform does not support yet", message.received_at_unix_ms,
             out);
      return;
  }
}

void UplinkProcessor::AlinkPost(const DeviceInfo& device, const UplinkMessage& message,
                                const AlinkTopic& topic, Outputs& out) const {
  std::string refusal;
  const auto parsed = ParseStructured(device, message, out, &refusal);
  if (!parsed || !parsed->is_object()) {
    bool ack = true;
    const auto id = RecoverAlinkId(message.payload, ack);
    if (parsed) {
      refusal = "a request must be a JSON object";
      Reject(device, message.message_id, RejectReason::kMalformed, message.topic, refusal,
             message.received_at_unix_ms, out);
    }
    Answer(device, topic, id.value_or(Json()), ack, kAlinkBadRequest, refusal, out);
    return;
  }
  const AlinkRequest request = ReadAlinkRequest(*parsed);
  AlinkPosted posted;
  if (const auto detail = ReadAlinkPost(device.validator->model(), topic, request.params, posted)) {
    Reject(device, message.message_id, RejectReason::kMalformed, message.topic, *detail,
           message.received_at_unix_ms, out);
    Answer(device, topic, request.id, request.ack, kAlinkInvalidParams, *detail, out);
    return;
  }
  const AlinkReport& report = posted.report;
  const auto& events = posted.events;
  const auto& event_errors = posted.event_errors;
  std::vector<std::string> errors;
  if (!report.report_json.empty()) {
    const auto outcome = HandOnReport(
        device, message, report.report_json,
        [&](const thing_model::ValidationError& e) {
          return fmt::format("{}: {}", AlinkErrorPath(report, e.path), e.message);
        },
        report.errors, out);
    if (outcome.invalid > 0) {
      errors.push_back(outcome.detail);
    }
  } else if (!report.errors.empty()) {
    Reject(device, message.message_id, RejectReason::kInvalidProperty, message.topic,
           JoinErrors(report.errors, report.errors.size()), message.received_at_unix_ms, out,
           static_cast<double>(report.errors.size()));
    errors.push_back(JoinErrors(report.errors, report.errors.size()));
  }
  if (!event_errors.empty()) {
    errors.push_back(JoinErrors(event_errors, event_errors.size()));
    Reject(device, message.message_id, RejectReason::kInvalidEvent, message.topic, errors.back(),
           message.received_at_unix_ms, out, static_cast<double>(event_errors.size()));
  }
  if (!events.empty()) {
    const auto refused = AlinkEvents(device, message, events, out);
    if (!refused.empty()) {
      errors.push_back(JoinErrors(refused, refused.size()));
    }
  }
  if (errors.empty()) {
    Answer(device, topic, request.id, request.ack, kAlinkOk, "success", out);
  } else {
    Answer(device, topic, request.id, request.ack, kAlinkInvalidParams,
           "invalid params: " + JoinErrors(errors, errors.size()), out);
  }
}

std::vector<std::string> UplinkProcessor::AlinkEvents(
    const DeviceInfo& device, const UplinkMessage& message,
    const std::vector<std::tuple<std::string, Json, std::optional<int64_t>>>& events,
    Outputs& out) const {
  const thing_model::CompiledModel& model = device.validator->model();
  Json valid = Json::array();
  std::vector<std::string> errors;
  size_t invalid = 0;
  std::optional<int64_t> event_time;
  for (const auto& [identifier, paras, time] : events) {
    const auto [service_id, event_type] = SplitAlinkIdentifier(identifier);
    if (!paras.is_object() && !paras.is_null()) {
      ++invalid;
      errors.push_back(fmt::format("{}: the event's output must be an object", identifier));
      continue;
    }
    // The wire values in the model's types (bool 0/1, enums and dates as numbers).
    Json converted = paras.is_null() ? Json::object() : paras;
    const auto* service = model.FindService(service_id);
    const auto* event = service == nullptr ? nullptr : service->FindEvent(event_type);
    if (event != nullptr) {
      for (auto& [name, value] : converted.items()) {
        value = AlinkToModelValue(event->paras.Find(name), value);
      }
    }
    const auto result = device.validator->ValidateEvent(service_id, event_type, converted);
    if (!result.ok()) {
      ++invalid;
      for (const auto& e : result.errors) {
        if (errors.size() < kMaxErrorsInRecord) {
          errors.push_back(fmt::format("{}: {}", identifier, e.ToString()));
        }
      }
      continue;
    }
    const int64_t at = time.value_or(message.received_at_unix_ms);
    if (!event_time) {
      event_time = at;
    }
    valid.push_back({{"service_id", service_id},
                     {"event_type", event_type},
                     {"event_time", Rfc3339Millis(at)},
                     {"paras", std::move(converted)}});
  }
  if (invalid > 0) {
    Reject(device, message.message_id, RejectReason::kInvalidEvent, message.topic,
           JoinErrors(errors, errors.size()), message.received_at_unix_ms, out,
           static_cast<double>(invalid));
  }
  if (!valid.empty()) {
    AddRecord(device, message.message_id, "device.event", "report", message.topic,
              event_time.value_or(message.received_at_unix_ms),
              Dump(Json{{"services", std::move(valid)}}), out);
  }
  return errors;
}

void UplinkProcessor::AlinkShadow(const DeviceInfo& device, const UplinkMessage& message,
                                  Outputs& out) const {
  const int64_t now = NowUnixMs();
  std::string refusal;
  const auto parsed = ParseStructured(device, message, out, &refusal);
  if (!parsed) {
    AnswerShadowError(device, now, "400", refusal, out);
    return;
  }
  const Json& document = *parsed;
  const auto malformed = [&](std::string_view code, std::string_view detail) {
    Reject(device, message.message_id, RejectReason::kMalformed, message.topic, detail,
           message.received_at_unix_ms, out);
    AnswerShadowError(device, now, code, detail, out);
  };
  if (!document.is_object() || !document.contains("method") || !document["method"].is_string()) {
    malformed("401", "a shadow message needs a method");
    return;
  }
  const std::string method = document["method"];
  std::optional<int64_t> version;
  if (const auto v = document.find("version"); v != document.end()) {
    if (!v->is_number_integer()) {
      malformed("403", "version: must be a number");
      return;
    }
    version = v->get<int64_t>();
  }
  if (method == "get") {
    shadow::v1::DeviceShadowGetRequest request;
    SetDeviceRef(device, request.mutable_device());
    out.shadow_gets.push_back(std::move(request));
    return;
  }
  if (method == "delete") {
    // The platform's shadow keeps the last reported value of each property (as IoTDA's does):
    // there is nothing to delete it with.
    Reject(device, message.message_id, RejectReason::kUnsupported, message.topic,
           "deleting reported shadow values is not supported", message.received_at_unix_ms, out);
    AnswerShadowError(device, now, "406",
                      "delete is not supported: reported values change with the next update", out);
    return;
  }
  if (method != "update") {
    malformed("406", "method: must be update, get or delete");
    return;
  }
  AlinkShadowUpdate(device, message, document, version, now, out);
}

void UplinkProcessor::AlinkShadowUpdate(const DeviceInfo& device, const UplinkMessage& message,
                                        const Json& document, std::optional<int64_t> version,
                                        int64_t now, Outputs& out) const {
  const auto malformed = [&](std::string_view code, std::string_view detail) {
    Reject(device, message.message_id, RejectReason::kMalformed, message.topic, detail,
           message.received_at_unix_ms, out);
    AnswerShadowError(device, now, code, detail, out);
  };
  const auto state = document.find("state");
  if (state == document.end() || !state->is_object()) {
    malformed("402", "state: must be an object");
    return;
  }
  const auto reported = state->find("reported");
  if (reported == state->end() || !reported->is_object()) {
    // `{"desired":"null"}` clears what the device handled: the shadow's delta is desired
    // against reported, nothing to store.
    if (state->contains("desired")) {
      out.after_handoff.push_back(
          {.device_topic = ShadowTopic(device), .payload = AlinkShadowAnswer(version, now).dump()});
      return;
    }
    malformed("404", "state.reported: must be an object");
    return;
  }
  const AlinkReport report = AlinkPropertyReport(device.validator->model(), *reported);
  if (report.report_json.empty() && report.errors.empty()) {
    malformed("405", "state.reported: is empty");
    return;
  }
  UplinkProcessor::ReportOutcome outcome;
  if (!report.report_json.empty()) {
    outcome = HandOnReport(
        device, message, report.report_json,
        [&](const thing_model::ValidationError& e) {
          return fmt::format("{}: {}", AlinkErrorPath(report, e.path), e.message);
        },
        report.errors, out);
  }
  if (outcome.invalid > 0) {
    AnswerShadowError(device, now, "460", "invalid reported values: " + outcome.detail, out);
    return;
  }
  out.after_handoff.push_back(
      {.device_topic = ShadowTopic(device), .payload = AlinkShadowAnswer(version, now).dump()});
}

void UplinkProcessor::AlinkResponse(const DeviceInfo& device, const UplinkMessage& message,
                                    const AlinkTopic& topic, Outputs& out) const {
  const UplinkKind kind = ResponseKind(topic.function);
  const bool rrpc = topic.function == AlinkFunction::kRrpcResponse ||
                    topic.function == AlinkFunction::kExtRrpcResponse;
  if (rrpc && !Json::accept(message.payload)) {
    // An RRPC answer may be any bytes: carried as the response's content.
    HandOnResponse(device, message, kind, std::string(topic.message_id),
                   {{"result_code", 0}, {"paras", {{"content", message.payload}}}}, out);
    return;
  }
  const auto parsed = ParseStructured(device, message, out);
  if (!parsed) {
    return;
  }
  const Json& document = *parsed;
  if (!document.is_object()) {
    Reject(device, message.message_id, RejectReason::kMalformed, message.topic,
           "a reply must be a JSON object", message.received_at_unix_ms, out);
    return;
  }
  std::string request_id(topic.message_id);
  if (!rrpc) {
    const auto id = document.find("id");
    if (id != document.end() && id->is_string()) {
      request_id = id->get<std::string>();
    } else if (id != document.end() && id->is_number_integer()) {
      request_id = id->dump();
    }
    if (request_id.empty() || request_id.size() > limits_.max_id_bytes) {
      Reject(device, message.message_id, RejectReason::kMalformed, message.topic,
             "a reply needs the id of the request it answers", message.received_at_unix_ms, out);
      return;
    }
  }
  int code = kAlinkOk;
  if (const auto c = document.find("code"); c != document.end() && c->is_number_integer()) {
    code = c->get<int>();
  }
  const Json data = document.value("data", Json::object());
  Json body = ResultOf(code, document);
  if (kind == UplinkKind::kPropertiesGetResponse) {
    body["services"] = AlinkServices(device.validator->model(), data);
  } else if (kind == UplinkKind::kCommandResponse) {
    body["paras"] = data.is_object() ? data : Json{{"content", data}};
  }
  HandOnResponse(device, message, kind, request_id, std::move(body), out);
}

void UplinkProcessor::AlinkNtp(const DeviceInfo& device, const UplinkMessage& message,
                               const AlinkTopic& topic, Outputs& out) const {
  const auto parsed = ParseStructured(device, message, out);
  if (!parsed) {
    return;
  }
  const auto sent = parsed->is_object() ? parsed->find("deviceSendTime") : parsed->end();
  if (!parsed->is_object() || sent == parsed->end() || !AlinkTime(*sent)) {
    Reject(device, message.message_id, RejectReason::kMalformed, message.topic,
           "deviceSendTime: must be a time in milliseconds", message.received_at_unix_ms, out);
    return;
  }
  const Json reply = {{"deviceSendTime", *sent},
                      {"serverRecvTime", std::to_string(message.received_at_unix_ms)},
                      {"serverSendTime", std::to_string(NowUnixMs())}};
  // Like IoTDA's $time_sync: published as soon as the batch is handed on (it carries no data).
  out.replies.push_back({.device_topic = AlinkDeviceTopic(
                             device.device_id, fmt::format("/ext/ntp/{}/{}/response",
                                                           topic.product_key, topic.device_name)),
                         .payload = reply.dump()});
}

void UplinkProcessor::AlinkRaw(const DeviceInfo& device, const UplinkMessage& message,
                               Outputs& out) const {
  // Raw data is binary (a device's own format): carried in base64, never altered.
  const Json body = {{"topic", message.topic},
                     {"content", common::Base64Encode(message.payload)},
                     {"content_encoding", "base64"}};
  AddRecord(device, message.message_id, "device.message", "report", message.topic,
            message.received_at_unix_ms, Dump(body), out);
}

}  // namespace iot::device_gateway
