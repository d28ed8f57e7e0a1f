#pragma once

#include <memory>

#include "iot/common/auth.h"
#include "iot/thing_model/model_cache.h"
#include "iot/thing_model/thing_model_service.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot::thing_model {

namespace pb = iot::thing_model::v1;

/// gRPC handlers: authenticate, convert protos to domain types, call ThingModelService.
class TenantsHandler final : public pb::Tenants::Service {
 public:
  TenantsHandler(std::shared_ptr<ThingModelService> service,
                 std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status CreateTenant(grpc::ServerContext* context, const pb::CreateTenantRequest* request,
                            pb::CreateTenantResponse* response) override;
  grpc::Status CreateApiKey(grpc::ServerContext* context, const pb::CreateApiKeyRequest* request,
                            pb::CreateApiKeyResponse* response) override;
  grpc::Status RevokeApiKey(grpc::ServerContext* context, const pb::RevokeApiKeyRequest* request,
                            pb::RevokeApiKeyResponse* response) override;
  grpc::Status ListApiKeys(grpc::ServerContext* context, const pb::ListApiKeysRequest* request,
                           pb::ListApiKeysResponse* response) override;

 private:
  std::shared_ptr<ThingModelService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

class ProductsHandler final : public pb::Products::Service {
 public:
  ProductsHandler(std::shared_ptr<ThingModelService> service,
                  std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status CreateProduct(grpc::ServerContext* context, const pb::CreateProductRequest* request,
                             pb::Product* response) override;
  grpc::Status ShowProduct(grpc::ServerContext* context, const pb::ShowProductRequest* request,
                           pb::Product* response) override;
  grpc::Status UpdateProduct(grpc::ServerContext* context, const pb::UpdateProductRequest* request,
                             pb::Product* response) override;
  grpc::Status DeleteProduct(grpc::ServerContext* context, const pb::DeleteProductRequest* request,
                             pb::DeleteProductResponse* response) override;
  grpc::Status ListProducts(grpc::ServerContext* context, const pb::ListProductsRequest* request,
                            pb::ListProductsResponse* response) override;
  grpc::Status ListProductModelVersions(grpc::ServerContext* context,
                                        const pb::ListProductModelVersionsRequest* request,
                                        pb::ListProductModelVersionsResponse* response) override;

 private:
  std::shared_ptr<ThingModelService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

class DevicesHandler final : public pb::Devices::Service {
 public:
  DevicesHandler(std::shared_ptr<ThingModelService> service,
                 std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status AddDevice(grpc::ServerContext* context, const pb::AddDeviceRequest* request,
                         pb::AddDeviceResponse* response) override;
  grpc::Status ShowDevice(grpc::ServerContext* context, const pb::ShowDeviceRequest* request,
                          pb::Device* response) override;
  grpc::Status UpdateDevice(grpc::ServerContext* context, const pb::UpdateDeviceRequest* request,
                            pb::Device* response) override;
  grpc::Status DeleteDevice(grpc::ServerContext* context, const pb::DeleteDeviceRequest* request,
                            pb::DeleteDeviceResponse* response) override;
  grpc::Status ListDevices(grpc::ServerContext* context, const pb::ListDevicesRequest* request,
                           pb::ListDevicesResponse* response) override;
  grpc::Status ResetDeviceSecret(grpc::ServerContext* context,
                                 const pb::ResetDeviceSecretRequest* request,
                                 pb::ResetDeviceSecretResponse* response) override;
  grpc::Status FreezeDevice(grpc::ServerContext* context, const pb::FreezeDeviceRequest* request,
                            pb::Device* response) override;
  grpc::Status UnfreezeDevice(grpc::ServerContext* context,
                              const pb::UnfreezeDeviceRequest* request,
                              pb::Device* response) override;

 private:
  std::shared_ptr<ThingModelService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

class InternalHandler final : public pb::InternalThingModel::Service {
 public:
  InternalHandler(std::shared_ptr<ThingModelService> service,
                  std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status ReportDevicePresence(grpc::ServerContext* context,
                                    const pb::ReportDevicePresenceRequest* request,
                                    pb::ReportDevicePresenceResponse* response) override;
  grpc::Status GetDeviceContext(grpc::ServerContext* context,
                                const pb::GetDeviceContextRequest* request,
                                pb::DeviceContext* response) override;
  grpc::Status ValidateProperties(grpc::ServerContext* context,
                                  const pb::ValidatePropertiesRequest* request,
                                  pb::ValidatePropertiesResponse* response) override;

 private:
  std::shared_ptr<ThingModelService> service_;
  std::shared_ptr<common::Authenticator> auth_;
  ModelCache models_;
};

}  // namespace iot::thing_model
