// iot.device_gateway.v1.InternalDownlink: proto <-> DownlinkService.

#include "iot/common/auth.h"
#include "iot/common/status.h"
#include "iot/device_gateway/grpc_handlers.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"

namespace iot::device_gateway {
namespace {

namespace pb = iot::device_gateway::v1;

absl::StatusOr<DownlinkKind> KindOf(pb::DownlinkKind kind) {
  switch (kind) {
    case pb::DOWNLINK_KIND_COMMAND:
      return DownlinkKind::kCommand;
    case pb::DOWNLINK_KIND_PROPERTIES_SET:
      return DownlinkKind::kPropertiesSet;
    case pb::DOWNLINK_KIND_PROPERTIES_GET:
      return DownlinkKind::kPropertiesGet;
    case pb::DOWNLINK_KIND_MESSAGE:
      return DownlinkKind::kMessageDown;
    case pb::DOWNLINK_KIND_SHADOW_GET_RESPONSE:
      return DownlinkKind::kShadowResponse;
    case pb::DOWNLINK_KIND_EVENT:
      return DownlinkKind::kEventDown;
    default:
      return common::InvalidField("kind", "must be set to a DownlinkKind");
  }
}

class DownlinkHandler final : public pb::InternalDownlink::Service {
 public:
  DownlinkHandler(std::shared_ptr<DownlinkService> service,
                  std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status Publish(grpc::ServerContext* context, const pb::PublishRequest* request,
                       pb::PublishResponse* response) override {
    if (auto caller = auth_->Authorize(*context, common::Access::kInternal); !caller.ok()) {
      return common::ToGrpcStatus(caller.status());
    }
    auto kind = KindOf(request->kind());
    if (!kind.ok()) {
      return common::ToGrpcStatus(kind.status());
    }
    auto result = service_->Publish(DownlinkRequest{.tenant_id = request->tenant_id(),
                                                    .device_id = request->device_id(),
                                                    .kind = *kind,
                                                    .request_id = request->request_id(),
                                                    .payload = request->payload(),
                                                    .qos = request->qos(),
                                                    .user_topic = request->user_topic()});
    if (!result.ok()) {
      return common::ToGrpcStatus(result.status());
    }
    response->set_online(result->online);
    response->set_topic(result->topic);
    return grpc::Status::OK;
  }

 private:
  std::shared_ptr<DownlinkService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

}  // namespace

std::shared_ptr<grpc::Service> MakeDownlinkHandler(std::shared_ptr<DownlinkService> service,
                                                   std::shared_ptr<common::Authenticator> auth) {
  return std::make_shared<DownlinkHandler>(std::move(service), std::move(auth));
}

}  // namespace iot::device_gateway
