#include "iot/common/json_limits.h"
#include "iot/common/status.h"
#include "iot/thing_model/grpc_handlers.h"
#include "iot/thing_model/validator.h"

namespace iot::thing_model {
namespace {

using common::Access;
using common::ToGrpcStatus;

void ToProto(const ApiKeyRecord& k, pb::ApiKey* out) {
  out->set_key_id(k.key_id);
  out->set_tenant_id(k.tenant_id);
  out->set_name(k.name);
  out->set_role(static_cast<pb::Role>(k.role));
  out->set_create_time(k.create_time);
  out->set_revoke_time(k.revoke_time);
  out->set_prefix(k.prefix);
}

void ToProto(const ProductRecord& p, pb::Product* out, bool with_json) {
  out->set_product_id(p.product_id);
  out->set_name(p.name);
  out->set_device_type(p.device_type);
  out->set_protocol_type(p.protocol_type);
  out->set_data_format(p.data_format);
  out->set_manufacturer_name(p.manufacturer_name);
  out->set_industry(p.industry);
  out->set_description(p.description);
  out->set_model_version(p.model_version);
  out->set_create_time(p.create_time);
  out->set_update_time(p.update_time);
  out->set_device_count(p.device_count);
  out->set_dialect(p.dialect);
  if (with_json) {
    out->set_product_json(p.product_json);
    out->set_tsl_json(p.tsl_json);
  }
}

pb::DeviceStatus StatusOf(const DeviceRecord& d) {
  if (d.frozen) {
    return pb::FROZEN;
  }
  switch (d.connection) {
    case Connection::kOnline:
      return pb::ONLINE;
    case Connection::kOffline:
      return pb::OFFLINE;
    case Connection::kInactive:
      break;
  }
  return pb::INACTIVE;
}

void ToProto(const DeviceRecord& d, pb::Device* out) {
  out->set_device_id(d.device_id);
  out->set_node_id(d.node_id);
  out->set_product_id(d.product_id);
  out->set_device_name(d.device_name);
  out->set_description(d.description);
  out->mutable_tags()->insert(d.tags.begin(), d.tags.end());
  out->set_status(StatusOf(d));
  out->set_create_time(d.create_time);
  out->set_last_online_time(d.last_online_time);
  out->set_last_offline_time(d.last_offline_time);
  out->set_fingerprint(d.fingerprint);
  out->set_has_secret(!d.secret_sealed.empty());
}

/// INVALID_ARGUMENT with every model error attached as trailing metadata.
grpc::Status ModelRejected(grpc::ServerContext* context, const absl::Status& status,
                           const std::vector<ModelIssue>& issues) {
  if (!issues.empty()) {
    pb::ModelErrors errors;
    for (const ModelIssue& issue : issues) {
      auto* e = errors.add_errors();
      e->set_path(issue.path);
      e->set_message(issue.message);
    }
    context->AddTrailingMetadata("iot-model-errors-bin", errors.SerializeAsString());
  }
  return ToGrpcStatus(status);
}

PageRequest PageOf(int32_t limit, const std::string& marker) {
  return PageRequest{.limit = limit, .marker = marker};
}

std::string DeviceStatusFilter(pb::DeviceStatus status) {
  switch (status) {
    case pb::INACTIVE:
      return "INACTIVE";
    case pb::ONLINE:
      return "ONLINE";
    case pb::OFFLINE:
      return "OFFLINE";
    case pb::FROZEN:
      return "FROZEN";
    default:
      return "";
  }
}

}  // namespace

grpc::Status TenantsHandler::CreateTenant(grpc::ServerContext* context,
                                          const pb::CreateTenantRequest* request,
                                          pb::CreateTenantResponse* response) {
  IOT_AUTHORIZE(caller, Access::kAdmin);
  auto created = service_->CreateTenant(caller, request->tenant_id(), request->name(),
                                        request->create_admin_key());
  if (!created.ok()) {
    return ToGrpcStatus(created.status());
  }
  response->mutable_tenant()->set_tenant_id(created->tenant.tenant_id);
  response->mutable_tenant()->set_name(created->tenant.name);
  response->mutable_tenant()->set_create_time(created->tenant.create_time);
  if (created->admin_key) {
    ToProto(created->admin_key->key, response->mutable_admin_key());
    response->set_admin_key_secret(created->admin_key->secret);
  }
  return grpc::Status::OK;
}

grpc::Status TenantsHandler::CreateApiKey(grpc::ServerContext* context,
                                          const pb::CreateApiKeyRequest* request,
                                          pb::CreateApiKeyResponse* response) {
  IOT_AUTHORIZE(caller, Access::kAdmin);
  const int role = request->role();
  if (role < 1 || role > 4) {
    return ToGrpcStatus(common::InvalidField("role", "must be reader, operator or admin"));
  }
  auto created = service_->CreateApiKey(caller, request->name(), static_cast<common::Role>(role));
  if (!created.ok()) {
    return ToGrpcStatus(created.status());
  }
  ToProto(created->key, response->mutable_key());
  response->set_secret(created->secret);
  return grpc::Status::OK;
}

grpc::Status TenantsHandler::RevokeApiKey(grpc::ServerContext* context,
                                          const pb::RevokeApiKeyRequest* request,
                                          pb::RevokeApiKeyResponse* response) {
  IOT_AUTHORIZE(caller, Access::kAdmin);
  auto key = service_->RevokeApiKey(caller, request->key_id());
  if (!key.ok()) {
    return ToGrpcStatus(key.status());
  }
  ToProto(*key, response->mutable_key());
  return grpc::Status::OK;
}

grpc::Status TenantsHandler::ListApiKeys(grpc::ServerContext* context,
                                         const pb::ListApiKeysRequest* request,
                                         pb::ListApiKeysResponse* response) {
  IOT_AUTHORIZE(caller, Access::kAdmin);
  auto page = service_->ListApiKeys(caller, PageOf(request->limit(), request->marker()),
                                    request->include_revoked());
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const auto& key : page->items) {
    ToProto(key, response->add_keys());
  }
  response->set_next_marker(page->next_marker);
  return grpc::Status::OK;
}

grpc::Status ProductsHandler::CreateProduct(grpc::ServerContext* context,
                                            const pb::CreateProductRequest* request,
                                            pb::Product* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  std::vector<ModelIssue> issues;
  auto product =
      service_->CreateProduct(caller, request->product_json(), request->tsl_json(), &issues);
  if (!product.ok()) {
    return ModelRejected(context, product.status(), issues);
  }
  ToProto(*product, response, true);
  return grpc::Status::OK;
}

grpc::Status ProductsHandler::ShowProduct(grpc::ServerContext* context,
                                          const pb::ShowProductRequest* request,
                                          pb::Product* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto product = service_->ShowProduct(caller, request->product_id(), request->model_version());
  if (!product.ok()) {
    return ToGrpcStatus(product.status());
  }
  ToProto(*product, response, true);
  return grpc::Status::OK;
}

grpc::Status ProductsHandler::UpdateProduct(grpc::ServerContext* context,
                                            const pb::UpdateProductRequest* request,
                                            pb::Product* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  std::vector<ModelIssue> issues;
  auto product = service_->UpdateProduct(caller, request->product_id(), request->product_json(),
                                         request->tsl_json(), &issues);
  if (!product.ok()) {
    return ModelRejected(context, product.status(), issues);
  }
  ToProto(*product, response, true);
  return grpc::Status::OK;
}

grpc::Status ProductsHandler::DeleteProduct(grpc::ServerContext* context,
                                            const pb::DeleteProductRequest* request,
                                            pb::DeleteProductResponse* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  auto deleted = service_->DeleteProduct(caller, request->product_id(), request->force());
  if (!deleted.ok()) {
    return ToGrpcStatus(deleted.status());
  }
  response->set_deleted_devices(*deleted);
  return grpc::Status::OK;
}

grpc::Status ProductsHandler::ListProducts(grpc::ServerContext* context,
                                           const pb::ListProductsRequest* request,
                                           pb::ListProductsResponse* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto page = service_->ListProducts(
      caller, PageOf(request->limit(), request->marker()),
      ProductFilter{.name_contains = request->name(), .device_type = request->device_type()});
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const auto& product : page->items) {
    ToProto(product, response->add_products(), false);
  }
  response->set_next_marker(page->next_marker);
  return grpc::Status::OK;
}

grpc::Status ProductsHandler::ListProductModelVersions(
    grpc::ServerContext* context, const pb::ListProductModelVersionsRequest* request,
    pb::ListProductModelVersionsResponse* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto versions = service_->ListModelVersions(caller, request->product_id());
  if (!versions.ok()) {
    return ToGrpcStatus(versions.status());
  }
  for (const auto& [version, time] : *versions) {
    auto* v = response->add_versions();
    v->set_model_version(version);
    v->set_create_time(time);
  }
  return grpc::Status::OK;
}

grpc::Status DevicesHandler::AddDevice(grpc::ServerContext* context,
                                       const pb::AddDeviceRequest* request,
                                       pb::AddDeviceResponse* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  DeviceRecord device;
  device.product_id = request->product_id();
  device.node_id = request->node_id();
  device.device_id = request->device_id();
  device.device_name = request->device_name();
  device.description = request->description();
  device.tags.insert(request->tags().begin(), request->tags().end());
  device.fingerprint = request->fingerprint();
  auto created = service_->AddDevice(caller, std::move(device), request->secret());
  if (!created.ok()) {
    return ToGrpcStatus(created.status());
  }
  ToProto(created->device, response->mutable_device());
  response->set_secret(created->secret);
  return grpc::Status::OK;
}

grpc::Status DevicesHandler::ShowDevice(grpc::ServerContext* context,
                                        const pb::ShowDeviceRequest* request,
                                        pb::Device* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto device = service_->ShowDevice(caller, request->device_id());
  if (!device.ok()) {
    return ToGrpcStatus(device.status());
  }
  ToProto(*device, response);
  return grpc::Status::OK;
}

grpc::Status DevicesHandler::UpdateDevice(grpc::ServerContext* context,
                                          const pb::UpdateDeviceRequest* request,
                                          pb::Device* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  ThingModelService::DeviceUpdate update;
  if (request->has_device_name()) {
    update.device_name = request->device_name();
  }
  if (request->has_description()) {
    update.description = request->description();
  }
  if (request->replace_tags()) {
    update.tags.emplace(request->tags().begin(), request->tags().end());
  }
  auto device = service_->UpdateDevice(caller, request->device_id(), update);
  if (!device.ok()) {
    return ToGrpcStatus(device.status());
  }
  ToProto(*device, response);
  return grpc::Status::OK;
}

grpc::Status DevicesHandler::DeleteDevice(grpc::ServerContext* context,
                                          const pb::DeleteDeviceRequest* request,
                                          pb::DeleteDeviceResponse* /*response*/) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  return ToGrpcStatus(service_->DeleteDevice(caller, request->device_id()));
}

grpc::Status DevicesHandler::ListDevices(grpc::ServerContext* context,
                                         const pb::ListDevicesRequest* request,
                                         pb::ListDevicesResponse* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto page = service_->ListDevices(caller, PageOf(request->limit(), request->marker()),
                                    DeviceFilter{.product_id = request->product_id(),
                                                 .status = DeviceStatusFilter(request->status()),
                                                 .tag_key = request->tag_key(),
                                                 .tag_value = request->tag_value(),
                                                 .name_prefix = request->name_prefix()});
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const auto& device : page->items) {
    ToProto(device, response->add_devices());
  }
  response->set_next_marker(page->next_marker);
  return grpc::Status::OK;
}

grpc::Status DevicesHandler::ResetDeviceSecret(grpc::ServerContext* context,
                                               const pb::ResetDeviceSecretRequest* request,
                                               pb::ResetDeviceSecretResponse* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  auto reset = service_->ResetDeviceSecret(caller, request->device_id(), request->secret());
  if (!reset.ok()) {
    return ToGrpcStatus(reset.status());
  }
  response->set_device_id(reset->device.device_id);
  response->set_secret(reset->secret);
  return grpc::Status::OK;
}

grpc::Status DevicesHandler::FreezeDevice(grpc::ServerContext* context,
                                          const pb::FreezeDeviceRequest* request,
                                          pb::Device* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  auto device = service_->SetFrozen(caller, request->device_id(), true);
  if (!device.ok()) {
    return ToGrpcStatus(device.status());
  }
  ToProto(*device, response);
  return grpc::Status::OK;
}

grpc::Status DevicesHandler::UnfreezeDevice(grpc::ServerContext* context,
                                            const pb::UnfreezeDeviceRequest* request,
                                            pb::Device* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  auto device = service_->SetFrozen(caller, request->device_id(), false);
  if (!device.ok()) {
    return ToGrpcStatus(device.status());
  }
  ToProto(*device, response);
  return grpc::Status::OK;
}

grpc::Status InternalHandler::ReportDevicePresence(grpc::ServerContext* context,
                                                   const pb::ReportDevicePresenceRequest* request,
                                                   pb::ReportDevicePresenceResponse* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  auto device = service_->ReportPresence(request->device_id(), request->online(), request->time());
  if (!device.ok()) {
    return ToGrpcStatus(device.status());
  }
  ToProto(*device, response->mutable_device());
  return grpc::Status::OK;
}

grpc::Status InternalHandler::GetDeviceContext(grpc::ServerContext* context,
                                               const pb::GetDeviceContextRequest* request,
                                               pb::DeviceContext* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  auto found = service_->DeviceContext(request->device_id());
  if (!found.ok()) {
    return ToGrpcStatus(found.status());
  }
  const auto& [device, product] = *found;
  response->set_device_id(device.device_id);
  response->set_tenant_id(device.tenant_id);
  response->set_product_id(device.product_id);
  response->set_node_id(device.node_id);
  response->set_model_version(product.model_version);
  response->set_product_json(product.product_json);
  response->set_status(StatusOf(device));
  response->set_dialect(product.dialect);
  return grpc::Status::OK;
}

grpc::Status InternalHandler::ValidateProperties(grpc::ServerContext* context,
                                                 const pb::ValidatePropertiesRequest* request,
                                                 pb::ValidatePropertiesResponse* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  auto found = service_->DeviceContext(request->device_id());
  if (!found.ok()) {
    return ToGrpcStatus(found.status());
  }
  auto model = models_.Get(found->second.product_id, found->second.model_version,
                           found->second.product_json);
  if (!model.ok()) {
    return ToGrpcStatus(model.status());
  }
  const Validator validator(*model);
  const common::JsonLimits& limits = common::ProcessJsonLimits();
  if (!request->require_writable()) {
    const ReportResult result = validator.ValidateReport(
        request->report_json(), {.max_bytes = limits.max_bytes, .max_depth = limits.max_depth});
    for (const ValidationError& error : result.errors) {
      auto* e = response->add_errors();
      e->set_path(error.path);
      e->set_message(error.message);
    }
    return grpc::Status::OK;
  }
  auto parsed = common::ParseJson("report_json", request->report_json(), limits);
  if (!parsed.ok()) {
    return ToGrpcStatus(parsed.status());
  }
  const nlohmann::json& report = *parsed;
  if (!report.is_object() || !report.contains("services") || !report["services"].is_array()) {
    return ToGrpcStatus(common::InvalidField("report_json", "must be {\"services\":[...]}"));
  }
  size_t index = 0;
  for (const auto& entry : report["services"]) {
    const std::string service_id = entry.value("service_id", "");
    const ValidationResult result = validator.ValidateProperties(
        service_id, entry.value("properties", nlohmann::json::object()), PropertyMode::kWrite);
    for (const ValidationError& error : result.errors) {
      auto* e = response->add_errors();
      e->set_path("services[" + std::to_string(index) + "]." + error.path);
      e->set_message(error.message);
    }
    ++index;
  }
  return grpc::Status::OK;
}

}  // namespace iot::thing_model
