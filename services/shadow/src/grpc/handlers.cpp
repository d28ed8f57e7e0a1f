#include <fmt/format.h>

#include "iot/common/json_limits.h"
#include "iot/common/status.h"
#include "iot/shadow/grpc_handlers.h"

namespace iot::shadow {
namespace {

using common::Access;
using common::ToGrpcStatus;

void SideToProto(const ShadowSide& side, pb::DeviceShadowProperties* out) {
  nlohmann::json properties = nlohmann::json::object();
  for (const auto& [name, value] : side.properties) {
    properties[name] = value.value;
  }
  out->set_properties_json(properties.dump());
  out->set_event_time(side.event_time);
}

nlohmann::json MetadataOf(const ShadowSide& side) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, value] : side.properties) {
    out[name] = {{"timestamp", IotdaTime(value.time_ms)}};
  }
  return out;
}

void ToProto(const ShadowView& view, pb::ShowDeviceShadowResponse* out) {
  const DeviceShadow& shadow = view.shadow;
  out->set_device_id(shadow.device_id);
  out->set_version(shadow.version);
  static const ServiceShadow kEmpty;
  for (const std::string& service_id : view.service_ids) {
    auto it = shadow.services.find(service_id);
    const ServiceShadow& service = it == shadow.services.end() ? kEmpty : it->second;
    pb::DeviceShadowData* data = out->add_shadow();
    data->set_service_id(service_id);
    SideToProto(service.desired, data->mutable_desired());
    SideToProto(service.reported, data->mutable_reported());
    data->set_version(shadow.version);
    data->set_delta_json(Delta(service).dump());
    data->set_metadata_json(nlohmann::json{{"desired", MetadataOf(service.desired)},
                                           {"reported", MetadataOf(service.reported)}}
                                .dump());
  }
  if (shadow.last_property_set) {
    pb::PropertySetRecord* record = out->mutable_last_property_set();
    record->set_request_id(shadow.last_property_set->request_id);
    record->set_result_code(shadow.last_property_set->result_code);
    record->set_result_desc(shadow.last_property_set->result_desc);
    record->set_receive_time(Rfc3339Time(shadow.last_property_set->time_ms));
  }
}

}  // namespace

grpc::Status ShadowsHandler::ShowDeviceShadow(grpc::ServerContext* context,
                                              const pb::ShowDeviceShadowRequest* request,
                                              pb::ShowDeviceShadowResponse* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto view = service_->Show(caller, request->device_id(), request->service_id());
  if (!view.ok()) {
    return ToGrpcStatus(view.status());
  }
  ToProto(*view, response);
  return grpc::Status::OK;
}

grpc::Status ShadowsHandler::UpdateDeviceShadowDesiredData(
    grpc::ServerContext* context, const pb::UpdateDeviceShadowDesiredDataRequest* request,
    pb::ShowDeviceShadowResponse* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  std::vector<DesiredUpdate> updates;
  for (int i = 0; i < request->shadow_size(); ++i) {
    const pb::UpdateDesireData& entry = request->shadow(i);
    DesiredUpdate update;
    update.service_id = entry.service_id();
    auto desired =
        common::ParseJson(fmt::format("shadow[{}].desired_json", i), entry.desired_json());
    if (!desired.ok()) {
      return ToGrpcStatus(desired.status());
    }
    update.properties = *std::move(desired);
    if (entry.has_version()) {
      update.version = entry.version();
    }
    updates.push_back(std::move(update));
  }
  auto view = service_->UpdateDesired(caller, request->device_id(), updates);
  if (!view.ok()) {
    return ToGrpcStatus(view.status());
  }
  ToProto(*view, response);
  return grpc::Status::OK;
}

grpc::Status InternalShadowHandler::ReportProperties(grpc::ServerContext* context,
                                                     const pb::ReportPropertiesRequest* request,
                                                     iot::device_gateway::v1::IngestAck* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  std::vector<Report> reports;
  reports.reserve(static_cast<size_t>(request->reports_size()));
  for (const pb::PropertyReport& report : request->reports()) {
    reports.push_back(Report{.message_id = report.message_id(),
                             .tenant_id = report.device().tenant_id(),
                             .device_id = report.device().device_id(),
                             .services_json = report.services_json(),
                             .received_at_ms = report.received_at_unix_ms()});
  }
  return common::Acknowledge(service_->ReportProperties(reports), response);
}

grpc::Status InternalShadowHandler::GetDeviceShadowForDevice(
    grpc::ServerContext* context, const pb::DeviceShadowGetRequest* request,
    pb::DeviceShadowGetResponse* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  auto payload = service_->DeviceShadowGet(request->device().device_id(), request->service_id());
  if (!payload.ok()) {
    return ToGrpcStatus(payload.status());
  }
  response->set_payload_json(*std::move(payload));
  return grpc::Status::OK;
}

grpc::Status InternalShadowHandler::CompletePropertySet(
    grpc::ServerContext* context, const pb::PropertySetResult* request,
    iot::device_gateway::v1::IngestAck* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  return common::Acknowledge(
      service_->CompletePropertySet(request->message_id(), request->device().tenant_id(),
                                    request->device().device_id(), request->request_id(),
                                    request->payload_json(), request->received_at_unix_ms()),
      response);
}

grpc::Status InternalShadowHandler::ReportPresence(
    grpc::ServerContext* context, const iot::device_gateway::v1::PresenceEvents* request,
    iot::device_gateway::v1::IngestAck* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  std::vector<Presence> events;
  for (const auto& event : request->events()) {
    events.push_back(Presence{.message_id = event.message_id(),
                              .tenant_id = event.device().tenant_id(),
                              .device_id = event.device().device_id(),
                              .online = event.online()});
  }
  return common::Acknowledge(service_->ReportPresence(events), response);
}

}  // namespace iot::shadow
