#include <fmt/format.h>

#include "iot/command_dispatch/adapters.h"
#include "iot/common/auth.h"
#include "iot/common/status.h"
#include "iot/thing_model/product_model.h"

namespace iot::command_dispatch {
namespace {

namespace gw = iot::device_gateway::v1;
namespace tm = iot::thing_model::v1;

gw::DownlinkKind GatewayKind(Kind kind) {
  switch (kind) {
    case Kind::kCommand:
    case Kind::kAsyncCommand:
      return gw::DOWNLINK_KIND_COMMAND;
    case Kind::kPropertiesSet:
      return gw::DOWNLINK_KIND_PROPERTIES_SET;
    case Kind::kPropertiesGet:
      return gw::DOWNLINK_KIND_PROPERTIES_GET;
    case Kind::kMessage:
      return gw::DOWNLINK_KIND_MESSAGE;
  }
  return gw::DOWNLINK_KIND_UNSPECIFIED;
}

void Prepare(grpc::ClientContext& context, const std::string& key,
             std::chrono::milliseconds timeout) {
  common::SetBearer(context, key);
  context.set_deadline(std::chrono::system_clock::now() + timeout);
}

/// A peer's own errors are not the caller's: anything but NOT_FOUND is UNAVAILABLE here.
absl::Status PeerError(std::string_view peer, const grpc::Status& status) {
  const absl::Status s = common::FromGrpcStatus(status);
  if (s.code() == absl::StatusCode::kNotFound) {
    return s;
  }
  return absl::UnavailableError(fmt::format("{}: {}", peer, std::string(s.message())));
}

}  // namespace

GatewayPublisher::GatewayPublisher(std::shared_ptr<grpc::Channel> channel, std::string service_key,
                                   std::chrono::milliseconds call_timeout)
    : stub_(gw::InternalDownlink::NewStub(std::move(channel))),
      service_key_(std::move(service_key)),
      call_timeout_(call_timeout) {}

absl::StatusOr<bool> GatewayPublisher::Publish(const Downlink& downlink) {
  gw::PublishRequest request;
  request.set_tenant_id(downlink.tenant_id);
  request.set_device_id(downlink.device_id);
  request.set_kind(GatewayKind(downlink.kind));
  if (downlink.kind != Kind::kMessage) {
    request.set_request_id(downlink.request_id);
  }
  request.set_payload(downlink.payload);
  request.set_qos(1);
  request.set_user_topic(downlink.user_topic);
  grpc::ClientContext context;
  Prepare(context, service_key_, call_timeout_);
  gw::PublishResponse response;
  const grpc::Status status = stub_->Publish(&context, request, &response);
  if (!status.ok()) {
    return PeerError("device-gateway", status);
  }
  return response.online();
}

ThingModelDirectory::ThingModelDirectory(std::shared_ptr<grpc::Channel> channel,
                                         std::string service_key, std::chrono::milliseconds ttl)
    : stub_(tm::InternalThingModel::NewStub(std::move(channel))),
      service_key_(std::move(service_key)),
      ttl_(ttl) {}

absl::StatusOr<std::shared_ptr<const thing_model::Validator>> ThingModelDirectory::ValidatorOf(
    const tm::DeviceContext& context) {
  const std::string key = context.product_id() + "#" + std::to_string(context.model_version());
  {
    std::lock_guard lock(mu_);
    if (auto it = models_.find(key); it != models_.end()) {
      return it->second;
    }
  }
  auto parsed = thing_model::ParseProductModel(context.product_json());
  if (!parsed.ok()) {
    return absl::InternalError(fmt::format("product '{}': stored model does not parse: {}",
                                           context.product_id(),
                                           std::string(parsed.status().message())));
  }
  auto validator = std::make_shared<const thing_model::Validator>(parsed->model);
  std::lock_guard lock(mu_);
  if (models_.size() >= kMaxEntries) {
    models_.clear();
  }
  models_[key] = validator;
  return validator;
}

absl::StatusOr<DeviceInfo> ThingModelDirectory::Lookup(const std::string& device_id) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    if (auto it = devices_.find(device_id); it != devices_.end() && it->second.expires > now) {
      return it->second.info;
    }
  }
  tm::GetDeviceContextRequest request;
  request.set_device_id(device_id);
  grpc::ClientContext context;
  Prepare(context, service_key_, std::chrono::milliseconds(5000));
  tm::DeviceContext device;
  const grpc::Status status = stub_->GetDeviceContext(&context, request, &device);
  if (!status.ok()) {
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      return absl::NotFoundError(fmt::format("device '{}' not found", device_id));
    }
    return PeerError("thing-model", status);
  }
  auto validator = ValidatorOf(device);
  if (!validator.ok()) {
    return validator.status();
  }
  DeviceInfo info{.device_id = device.device_id(),
                  .tenant_id = device.tenant_id(),
                  .product_id = device.product_id(),
                  .validator = *validator};
  std::lock_guard lock(mu_);
  if (devices_.size() >= kMaxEntries) {
    devices_.clear();
  }
  devices_[device_id] = {.info = info, .expires = now + ttl_};
  return info;
}

}  // namespace iot::command_dispatch
