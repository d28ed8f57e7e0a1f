#include "iot/device_gateway/alink/downlink_codec.h"

#include <fmt/format.h>

#include "iot/common/json_limits.h"
#include "iot/common/status.h"

namespace iot::device_gateway::alink {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

/// `{"id","version":"1.0","params","method"}`: Alibaba's request, keys in the documented order.
std::string Request(const std::string& id, ordered_json params, const std::string& method) {
  return ordered_json{
      {"id", id}, {"version", "1.0"}, {"params", std::move(params)}, {"method", method}}
      .dump();
}

std::string SysTopic(const DeviceInfo& device, std::string_view rest) {
  return fmt::format("/sys/{}/{}/{}", device.product_id, device.node_id, rest);
}

absl::StatusOr<json> PayloadObject(const DownlinkRequest& request) {
  auto parsed =
      common::ParseJson("payload", request.payload, common::ProcessJsonLimits().Internal());
  if (!parsed.ok()) {
    return parsed.status();
  }
  if (!parsed->is_object()) {
    return common::InvalidField("payload", "must be a JSON object");
  }
  return parsed;
}

const thing_model::Service* FindService(const DeviceInfo& device, std::string_view service_id) {
  return device.validator == nullptr ? nullptr : device.validator->model().FindService(service_id);
}

/// A service's properties (IoTDA `{"name": value}`) into `params` under their wire names.
void AddProperties(const thing_model::Service* service, std::string_view service_id,
                   const json& properties, ordered_json& params) {
  for (const auto& [name, value] : properties.items()) {
    const thing_model::Parameter* parameter =
        service == nullptr ? nullptr : service->properties.Find(name);
    params[AlinkIdentifier(service_id, name)] = ToWire(parameter, value);
  }
}

absl::StatusOr<Downlink> PropertiesSet(const DownlinkRequest& request, const DeviceInfo& device) {
  auto payload = PayloadObject(request);
  if (!payload.ok()) {
    return payload.status();
  }
  const auto services = payload->find("services");
  if (services == payload->end() || !services->is_array()) {
    return common::InvalidField("payload.services", "an array of {service_id, properties}");
  }
  ordered_json params = ordered_json::object();
  for (const json& entry : *services) {
    if (!entry.is_object() || !entry.value("service_id", json()).is_string() ||
        !entry.value("properties", json()).is_object()) {
      return common::InvalidField("payload.services", "an array of {service_id, properties}");
    }
    const std::string service_id = entry["service_id"].get<std::string>();
    AddProperties(FindService(device, service_id), service_id, entry["properties"], params);
  }
  return Downlink{
      .topic = SysTopic(device, "thing/service/property/set"),
      .payload = Request(request.request_id, std::move(params), "thing.service.property.set")};
}

absl::StatusOr<Downlink> PropertiesGet(const DownlinkRequest& request, const DeviceInfo& device) {
  auto payload = PayloadObject(request);
  if (!payload.ok()) {
    return payload.status();
  }
  const json only = payload->value("service_id", json());
  if (!only.is_null() && !only.is_string()) {
    return common::InvalidField("payload.service_id", "must be a string");
  }
  // The names of every readable property (of one service when asked so), as Alibaba's
  // property/get takes them: an array of identifiers.
  ordered_json names = ordered_json::array();
  if (device.validator != nullptr) {
    for (const thing_model::Service& service : device.validator->model().services()) {
      if (only.is_string() && service.service_id != only.get<std::string>()) {
        continue;
      }
      for (const thing_model::Parameter& property : service.properties.items) {
        if ((property.method & thing_model::kMethodRead) != 0) {
          names.push_back(AlinkIdentifier(service.service_id, property.name));
        }
      }
    }
  }
  return Downlink{
      .topic = SysTopic(device, "thing/service/property/get"),
      .payload = Request(request.request_id, std::move(names), "thing.service.property.get")};
}

absl::StatusOr<Downlink> Command(const DownlinkRequest& request, const DeviceInfo& device) {
  auto payload = PayloadObject(request);
  if (!payload.ok()) {
    return payload.status();
  }
  const json service_id = payload->value("service_id", json());
  const json command_name = payload->value("command_name", json());
  if (!service_id.is_string() || service_id.get<std::string>().empty()) {
    return common::InvalidField("payload.service_id", "required");
  }
  if (!command_name.is_string() || command_name.get<std::string>().empty()) {
    return common::InvalidField("payload.command_name", "required");
  }
  const json paras = payload->value("paras", json::object());
  if (!paras.is_object()) {
    return common::InvalidField("payload.paras", "must be a JSON object");
  }
  const thing_model::Service* service = FindService(device, service_id.get<std::string>());
  const thing_model::Command* command =
      service == nullptr ? nullptr : service->FindCommand(command_name.get<std::string>());
  ordered_json params = ordered_json::object();
  for (const auto& [name, value] : paras.items()) {
    params[name] = ToWire(command == nullptr ? nullptr : command->paras.Find(name), value);
  }
  const std::string identifier =
      AlinkIdentifier(service_id.get<std::string>(), command_name.get<std::string>());
  // The TSL's callType: a sync service goes over RRPC (the device answers on
  // rrpc/response/{messageId}), an async one on its service topic (answered on ..._reply).
  const bool sync = command != nullptr && command->call_type == "sync";
  return Downlink{
      .topic = sync ? SysTopic(device, "rrpc/request/" + request.request_id)
                    : SysTopic(device, "thing/service/" + identifier),
      .payload = Request(request.request_id, std::move(params), "thing.service." + identifier)};
}

/// command-dispatch wraps a standard message as `{"object_device_id","name","id","content"}`
/// (IoTDA's messages/down); an Alink device gets the content itself: a JSON string as its
/// text, other JSON as JSON. Raw messages are sent as they are.
std::string MessageBody(const DownlinkRequest& request) {
  const auto parsed =
      common::ParseJson("payload", request.payload, common::ProcessJsonLimits().Internal());
  if (!parsed.ok() || !parsed->is_object() || parsed->size() != 4 ||
      parsed->value("object_device_id", json()) != request.device_id ||
      !parsed->contains("content") || !parsed->contains("name") || !parsed->contains("id")) {
    return request.payload;
  }
  const json& content = (*parsed)["content"];
  return content.is_string() ? content.get<std::string>() : content.dump();
}

Downlink Message(const DownlinkRequest& request, const DeviceInfo& device) {
  std::string_view custom = request.user_topic;
  if (custom.starts_with("user/")) {
    custom.remove_prefix(5);
  }
  return Downlink{.topic = custom.empty() ? SysTopic(device, "thing/model/down_raw")
                                          : fmt::format("/{}/{}/user/{}", device.product_id,
                                                        device.node_id, custom),
                  .payload = MessageBody(request)};
}

}  // namespace

json ToWire(const thing_model::Parameter* parameter, const json& value) {
  if (parameter != nullptr && parameter->type == thing_model::DataType::kBoolean &&
      value.is_boolean()) {
    return value.get<bool>() ? 1 : 0;
  }
  return value;
}

absl::StatusOr<Downlink> Encode(const DownlinkRequest& request, const DeviceInfo& device) {
  switch (request.kind) {
    case DownlinkKind::kCommand:
      return Command(request, device);
    case DownlinkKind::kPropertiesSet:
      return PropertiesSet(request, device);
    case DownlinkKind::kPropertiesGet:
      return PropertiesGet(request, device);
    case DownlinkKind::kMessageDown:
      return Message(request, device);
    case DownlinkKind::kShadowResponse:
    case DownlinkKind::kEventDown:
      break;
  }
  return common::InvalidField("kind", "not supported for devices of the alink dialect");
}

absl::StatusOr<Downlink> ShadowControl(const DeviceInfo& device, std::string_view shadow_get_json,
                                       int64_t now_ms) {
  auto shadow =
      common::ParseJson("shadow", shadow_get_json, common::ProcessJsonLimits().Internal());
  if (!shadow.ok()) {
    return shadow.status();
  }
  if (device.validator == nullptr) {
    return absl::InternalError("no model for the device");
  }
  json document = AlinkShadowReply(*shadow, now_ms);
  document["method"] = "control";
  for (auto& [side, values] : document["payload"]["state"].items()) {
    for (auto& [identifier, value] : values.items()) {
      const auto [service_id, name] = SplitAlinkIdentifier(identifier);
      const thing_model::Service* service = device.validator->model().FindService(service_id);
      value = ToWire(service == nullptr ? nullptr : service->properties.Find(name), value);
    }
  }
  return Downlink{.topic = fmt::format("/shadow/get/{}/{}", device.product_id, device.node_id),
                  .payload = document.dump()};
}

}  // namespace iot::device_gateway::alink
