#pragma once

#include <memory>

#include "iot/command_dispatch/dispatch_service.h"
#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/common/auth.h"

namespace iot::command_dispatch {

namespace pb = iot::command_dispatch::v1;

/// The public API: authenticate, convert protos to domain types, call DispatchService.
class CommandsHandler final : public pb::Commands::Service {
 public:
  CommandsHandler(std::shared_ptr<DispatchService> service,
                  std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status CreateCommand(grpc::ServerContext* context, const pb::CreateCommandRequest* request,
                             pb::CreateCommandResponse* response) override;
  grpc::Status CreateAsyncCommand(grpc::ServerContext* context,
                                  const pb::CreateAsyncCommandRequest* request,
                                  pb::AsyncDeviceCommand* response) override;
  grpc::Status ShowAsyncDeviceCommand(grpc::ServerContext* context,
                                      const pb::ShowAsyncDeviceCommandRequest* request,
                                      pb::AsyncDeviceCommand* response) override;
  grpc::Status ListAsyncDeviceCommands(grpc::ServerContext* context,
                                       const pb::ListAsyncDeviceCommandsRequest* request,
                                       pb::ListAsyncDeviceCommandsResponse* response) override;
  grpc::Status UpdateProperties(grpc::ServerContext* context,
                                const pb::UpdatePropertiesRequest* request,
                                pb::UpdatePropertiesResponse* response) override;
  grpc::Status ListProperties(grpc::ServerContext* context,
                              const pb::ListPropertiesRequest* request,
                              pb::ListPropertiesResponse* response) override;
  grpc::Status CreateMessage(grpc::ServerContext* context, const pb::CreateMessageRequest* request,
                             pb::CreateMessageResponse* response) override;
  grpc::Status ShowDeviceMessage(grpc::ServerContext* context,
                                 const pb::ShowDeviceMessageRequest* request,
                                 pb::DeviceMessage* response) override;
  grpc::Status ListDeviceMessages(grpc::ServerContext* context,
                                  const pb::ListDeviceMessagesRequest* request,
                                  pb::ListDeviceMessagesResponse* response) override;

 private:
  grpc::Status Sync(grpc::ServerContext* context, const SyncRequest& request, common::Access access,
                    std::string* request_id, std::string* response_json);

  std::shared_ptr<DispatchService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

/// The internal API the device-gateway calls (service credential only).
class InternalHandler final : public pb::InternalCommandDispatch::Service {
 public:
  InternalHandler(std::shared_ptr<DispatchService> service,
                  std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status CompleteRequests(grpc::ServerContext* context,
                                const pb::CompleteRequestsRequest* request,
                                iot::device_gateway::v1::IngestAck* response) override;
  grpc::Status ReportPresence(grpc::ServerContext* context,
                              const iot::device_gateway::v1::PresenceEvents* request,
                              iot::device_gateway::v1::IngestAck* response) override;

 private:
  std::shared_ptr<DispatchService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

}  // namespace iot::command_dispatch
