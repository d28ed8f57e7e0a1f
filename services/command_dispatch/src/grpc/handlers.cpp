#include "iot/command_dispatch/grpc_handlers.h"
#include "iot/common/status.h"

namespace iot::command_dispatch {
namespace {

using common::Access;
using common::ToGrpcStatus;

void AddHistory(const RequestRecord& r, google::protobuf::RepeatedPtrField<pb::StatusChange>* out) {
  for (const StatusChange& change : r.history) {
    auto* c = out->Add();
    c->set_status(change.status);
    c->set_time(change.time);
    c->set_detail(change.detail);
  }
}

void ToProto(const RequestRecord& r, pb::DeviceMessage* out) {
  out->set_message_id(r.request_id);
  out->set_device_id(r.device_id);
  out->set_name(r.name);
  out->set_payload_format(r.send_strategy);
  out->set_message_json(r.body);
  out->set_raw_message(r.raw);
  out->set_topic(r.topic);
  out->set_status(r.status);
  out->set_error(r.error);
  out->set_created_time(r.created_time);
  out->set_finished_time(r.finished_time);
  AddHistory(r, out->mutable_history());
}

void ToProto(const RequestRecord& r, pb::AsyncDeviceCommand* out) {
  out->set_device_id(r.device_id);
  out->set_command_id(r.request_id);
  out->set_service_id(r.service_id);
  out->set_command_name(r.command_name);
  out->set_paras_json(r.body);
  out->set_expire_time(static_cast<int32_t>(r.expire_seconds));
  out->set_send_strategy(r.send_strategy);
  out->set_status(r.status);
  out->set_result_json(r.result.value_or(""));
  out->set_error(r.error);
  out->set_created_time(r.created_time);
  out->set_sent_time(r.sent_time);
  out->set_delivered_time(r.delivered_time);
  out->set_response_time(r.response_time);
  AddHistory(r, out->mutable_history());
}

}  // namespace

grpc::Status CommandsHandler::Sync(grpc::ServerContext* context, const SyncRequest& request,
                                   Access access, std::string* request_id,
                                   std::string* response_json) {
  IOT_AUTHORIZE(caller, access);
  auto result = service_->SendSync(caller, request, context->deadline());
  if (!result.ok()) {
    return ToGrpcStatus(result.status());
  }
  *request_id = result->request_id;
  *response_json = result->response_json;
  return grpc::Status::OK;
}

grpc::Status CommandsHandler::CreateCommand(grpc::ServerContext* context,
                                            const pb::CreateCommandRequest* request,
                                            pb::CreateCommandResponse* response) {
  SyncRequest sync;
  sync.kind = Kind::kCommand;
  sync.device_id = request->device_id();
  sync.service_id = request->service_id();
  sync.command_name = request->command_name();
  sync.body_json = request->paras_json();
  sync.timeout_seconds = request->timeout();
  return Sync(context, sync, Access::kWrite, response->mutable_command_id(),
              response->mutable_response_json());
}

grpc::Status CommandsHandler::UpdateProperties(grpc::ServerContext* context,
                                               const pb::UpdatePropertiesRequest* request,
                                               pb::UpdatePropertiesResponse* response) {
  SyncRequest sync;
  sync.kind = Kind::kPropertiesSet;
  sync.device_id = request->device_id();
  sync.body_json = request->services_json();
  sync.timeout_seconds = request->timeout();
  return Sync(context, sync, Access::kWrite, response->mutable_request_id(),
              response->mutable_response_json());
}

grpc::Status CommandsHandler::ListProperties(grpc::ServerContext* context,
                                             const pb::ListPropertiesRequest* request,
                                             pb::ListPropertiesResponse* response) {
  SyncRequest sync;
  sync.kind = Kind::kPropertiesGet;
  sync.device_id = request->device_id();
  sync.service_id = request->service_id();
  sync.timeout_seconds = request->timeout();
  return Sync(context, sync, Access::kRead, response->mutable_request_id(),
              response->mutable_response_json());
}

grpc::Status CommandsHandler::CreateAsyncCommand(grpc::ServerContext* context,
                                                 const pb::CreateAsyncCommandRequest* request,
                                                 pb::AsyncDeviceCommand* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  auto created = service_->CreateAsyncCommand(caller, {.device_id = request->device_id(),
                                                       .service_id = request->service_id(),
                                                       .command_name = request->command_name(),
                                                       .paras_json = request->paras_json(),
                                                       .expire_time = request->expire_time(),
                                                       .send_strategy = request->send_strategy()});
  if (!created.ok()) {
    return ToGrpcStatus(created.status());
  }
  ToProto(*created, response);
  return grpc::Status::OK;
}

grpc::Status CommandsHandler::ShowAsyncDeviceCommand(
    grpc::ServerContext* context, const pb::ShowAsyncDeviceCommandRequest* request,
    pb::AsyncDeviceCommand* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto found =
      service_->Show(caller, request->device_id(), Kind::kAsyncCommand, request->command_id());
  if (!found.ok()) {
    return ToGrpcStatus(found.status());
  }
  ToProto(*found, response);
  return grpc::Status::OK;
}

grpc::Status CommandsHandler::ListAsyncDeviceCommands(
    grpc::ServerContext* context, const pb::ListAsyncDeviceCommandsRequest* request,
    pb::ListAsyncDeviceCommandsResponse* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto page = service_->List(caller, request->device_id(), Kind::kAsyncCommand, request->status(),
                             request->limit(), request->marker());
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const auto& item : page->items) {
    ToProto(item, response->add_commands());
  }
  response->set_next_marker(page->next_marker);
  return grpc::Status::OK;
}

grpc::Status CommandsHandler::CreateMessage(grpc::ServerContext* context,
                                            const pb::CreateMessageRequest* request,
                                            pb::CreateMessageResponse* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  auto created = service_->CreateMessage(caller, {.device_id = request->device_id(),
                                                  .message_id = request->message_id(),
                                                  .name = request->name(),
                                                  .payload_format = request->payload_format(),
                                                  .message_json = request->message_json(),
                                                  .raw_message = request->raw_message(),
                                                  .topic = request->topic(),
                                                  .ttl_minutes = request->ttl(),
                                                  .ttl_seconds = request->ttl_seconds()});
  if (!created.ok()) {
    return ToGrpcStatus(created.status());
  }
  response->set_message_id(created->request_id);
  ToProto(*created, response->mutable_result());
  return grpc::Status::OK;
}

grpc::Status CommandsHandler::ShowDeviceMessage(grpc::ServerContext* context,
                                                const pb::ShowDeviceMessageRequest* request,
                                                pb::DeviceMessage* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto found = service_->Show(caller, request->device_id(), Kind::kMessage, request->message_id());
  if (!found.ok()) {
    return ToGrpcStatus(found.status());
  }
  ToProto(*found, response);
  return grpc::Status::OK;
}

grpc::Status CommandsHandler::ListDeviceMessages(grpc::ServerContext* context,
                                                 const pb::ListDeviceMessagesRequest* request,
                                                 pb::ListDeviceMessagesResponse* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto page = service_->List(caller, request->device_id(), Kind::kMessage, request->status(),
                             request->limit(), request->marker());
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const auto& item : page->items) {
    ToProto(item, response->add_messages());
  }
  response->set_next_marker(page->next_marker);
  return grpc::Status::OK;
}

grpc::Status InternalHandler::CompleteRequests(grpc::ServerContext* context,
                                               const pb::CompleteRequestsRequest* request,
                                               iot::device_gateway::v1::IngestAck* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  std::vector<DeviceResponse> responses;
  responses.reserve(static_cast<size_t>(request->responses_size()));
  for (const auto& r : request->responses()) {
    responses.push_back({.device_id = r.device().device_id(),
                         .request_id = r.request_id(),
                         .payload_json = r.payload_json(),
                         .message_id = r.message_id()});
  }
  return common::Acknowledge(service_->CompleteRequests(responses), response);
}

grpc::Status InternalHandler::ReportPresence(grpc::ServerContext* context,
                                             const iot::device_gateway::v1::PresenceEvents* request,
                                             iot::device_gateway::v1::IngestAck* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  std::vector<DevicePresence> events;
  events.reserve(static_cast<size_t>(request->events_size()));
  for (const auto& event : request->events()) {
    events.push_back({.message_id = event.message_id(),
                      .device_id = event.device().device_id(),
                      .online = event.online()});
  }
  return common::Acknowledge(service_->ReportPresence(events), response);
}

}  // namespace iot::command_dispatch
