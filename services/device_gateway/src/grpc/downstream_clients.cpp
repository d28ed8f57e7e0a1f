// The owners of device data over gRPC (internal RPCs, service credential).

#include <grpcpp/create_channel.h>

#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/common/auth.h"
#include "iot/common/logging.h"
#include "iot/common/status.h"
#include "iot/device_gateway/grpc_clients.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"

namespace iot::device_gateway {
namespace {

namespace dg = iot::device_gateway::v1;

template <typename Service>
std::unique_ptr<typename Service::Stub> StubFor(const std::string& address,
                                                const std::string& owner) {
  if (address.empty() || address == "none") {
    common::LogWarn("owner not configured: the gateway hands it nothing", {{"owner", owner}});
    return nullptr;
  }
  return Service::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

class GrpcDownstream final : public Downstream {
 public:
  explicit GrpcDownstream(const DownstreamAddresses& a)
      : shadow_(StubFor<shadow::v1::InternalShadow>(a.shadow, "shadow")),
        commands_(StubFor<command_dispatch::v1::InternalCommandDispatch>(a.command_dispatch,
                                                                         "command-dispatch")),
        rules_(StubFor<rule_forwarding::v1::InternalIngest>(a.rule_forwarding, "rule-forwarding")),
        service_key_(a.service_key),
        timeout_(a.timeout) {}

  OwnerAnswer ReportProperties(const shadow::v1::ReportPropertiesRequest& request) override {
    return Call(shadow_, &shadow::v1::InternalShadow::Stub::ReportProperties, request);
  }
  OwnerAnswer CompletePropertySet(const shadow::v1::PropertySetResult& result) override {
    return Call(shadow_, &shadow::v1::InternalShadow::Stub::CompletePropertySet, result);
  }
  absl::StatusOr<std::string> GetDeviceShadow(
      const shadow::v1::DeviceShadowGetRequest& request) override {
    if (!shadow_) {
      return absl::NotFoundError("shadow is not deployed");
    }
    grpc::ClientContext context;
    Prepare(context);
    shadow::v1::DeviceShadowGetResponse response;
    if (auto status =
            common::FromGrpcStatus(shadow_->GetDeviceShadowForDevice(&context, request, &response));
        !status.ok()) {
      return status;
    }
    return response.payload_json();
  }
  OwnerAnswer ShadowPresence(const dg::PresenceEvents& events) override {
    return Call(shadow_, &shadow::v1::InternalShadow::Stub::ReportPresence, events);
  }
  OwnerAnswer CompleteRequests(
      const command_dispatch::v1::CompleteRequestsRequest& request) override {
    return Call(commands_, &command_dispatch::v1::InternalCommandDispatch::Stub::CompleteRequests,
                request);
  }
  OwnerAnswer CommandPresence(const dg::PresenceEvents& events) override {
    return Call(commands_, &command_dispatch::v1::InternalCommandDispatch::Stub::ReportPresence,
                events);
  }
  OwnerAnswer Ingest(const rule_forwarding::v1::IngestRequest& request) override {
    return Call(rules_, &rule_forwarding::v1::InternalIngest::Stub::Ingest, request);
  }

 private:
  void Prepare(grpc::ClientContext& context) const {
    common::SetBearer(context, service_key_);
    context.set_deadline(std::chrono::system_clock::now() + timeout_);
  }

  /// A not-configured owner takes everything (nobody to hand it to).
  template <typename Stub, typename Method, typename Request>
  OwnerAnswer Call(const std::unique_ptr<Stub>& stub, Method method, const Request& request) {
    dg::IngestAck ack;
    if (!stub) {
      return ack;
    }
    grpc::ClientContext context;
    Prepare(context);
    if (absl::Status status = common::FromGrpcStatus(((*stub).*method)(&context, request, &ack));
        !status.ok()) {
      return status;
    }
    return ack;
  }

  std::unique_ptr<shadow::v1::InternalShadow::Stub> shadow_;
  std::unique_ptr<command_dispatch::v1::InternalCommandDispatch::Stub> commands_;
  std::unique_ptr<rule_forwarding::v1::InternalIngest::Stub> rules_;
  std::string service_key_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::shared_ptr<Downstream> MakeGrpcDownstream(const DownstreamAddresses& addresses) {
  return std::make_shared<GrpcDownstream>(addresses);
}

}  // namespace iot::device_gateway
