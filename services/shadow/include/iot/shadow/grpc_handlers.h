#pragma once

#include <memory>

#include "iot/common/auth.h"
#include "iot/shadow/shadow_service.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"

namespace iot::shadow {

namespace pb = iot::shadow::v1;

/// Public API (tenant API keys): converts protos, calls ShadowService.
class ShadowsHandler final : public pb::Shadows::Service {
 public:
  ShadowsHandler(std::shared_ptr<ShadowService> service,
                 std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status ShowDeviceShadow(grpc::ServerContext* context,
                                const pb::ShowDeviceShadowRequest* request,
                                pb::ShowDeviceShadowResponse* response) override;
  grpc::Status UpdateDeviceShadowDesiredData(
      grpc::ServerContext* context, const pb::UpdateDeviceShadowDesiredDataRequest* request,
      pb::ShowDeviceShadowResponse* response) override;

 private:
  std::shared_ptr<ShadowService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

/// Internal API (service credential), called by the device-gateway.
class InternalShadowHandler final : public pb::InternalShadow::Service {
 public:
  InternalShadowHandler(std::shared_ptr<ShadowService> service,
                        std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status ReportProperties(grpc::ServerContext* context,
                                const pb::ReportPropertiesRequest* request,
                                iot::device_gateway::v1::IngestAck* response) override;
  grpc::Status GetDeviceShadowForDevice(grpc::ServerContext* context,
                                        const pb::DeviceShadowGetRequest* request,
                                        pb::DeviceShadowGetResponse* response) override;
  grpc::Status CompletePropertySet(grpc::ServerContext* context,
                                   const pb::PropertySetResult* request,
                                   iot::device_gateway::v1::IngestAck* response) override;
  grpc::Status ReportPresence(grpc::ServerContext* context,
                              const iot::device_gateway::v1::PresenceEvents* request,
                              iot::device_gateway::v1::IngestAck* response) override;

 private:
  std::shared_ptr<ShadowService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

}  // namespace iot::shadow
