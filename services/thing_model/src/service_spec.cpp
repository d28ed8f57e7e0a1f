#include "iot/thing_model/service_spec.h"

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/thing_model/grpc_handlers.h"
#include "iot/thing_model/pg_registry.h"
#include "iot/thing_model/redis_projection.h"
#include "iot/thing_model/thing_model_service.h"

namespace iot::thing_model {

common::ServiceSpec Spec() {
  return {.name = "thing-model",
          .env_prefix = "IOT_THING_MODEL",
          .grpc_port = 50052,
          .metrics_port = 9102,
          .pg_schema = "thing_model",
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = false};
}

Config ReadConfig(common::EnvReader& env) {
  Config config;
  config.secret_key = env.Required("IOT_SECRET_KEY");
  if (!config.secret_key.empty()) {
    if (auto box = common::SecretBox::FromKeyText(config.secret_key); !box.ok()) {
      env.AddError("IOT_SECRET_KEY", std::string(box.status().message()));
    }
  }
  config.bootstrap_tenant = env.String("IOT_THING_MODEL_BOOTSTRAP_TENANT", "default");
  config.bootstrap_api_key = env.String("IOT_THING_MODEL_BOOTSTRAP_API_KEY", "");
  config.service_api_key = env.String("IOT_SERVICE_API_KEY", "");
  const auto check_key = [&env](const char* name, const std::string& value) {
    if (!value.empty() && value.size() < 24) {
      env.AddError(name, "must be at least 24 characters");
    }
  };
  check_key("IOT_THING_MODEL_BOOTSTRAP_API_KEY", config.bootstrap_api_key);
  check_key("IOT_SERVICE_API_KEY", config.service_api_key);
  return config;
}

nlohmann::json ToJson(const Config& config) {
  return {{"secret_key", config.secret_key},
          {"bootstrap_tenant", config.bootstrap_tenant},
          {"bootstrap_api_key", config.bootstrap_api_key},
          {"service_api_key", config.service_api_key}};
}

void Wire(common::ServiceContext& context, const Config& config) {
  auto registry = std::make_shared<PgRegistry>(context.postgres);
  auto projection = std::make_shared<RedisProjection>(context.redis);
  auto secrets = common::SecretBox::FromKeyText(config.secret_key);
  auto service = std::make_shared<ThingModelService>(
      registry, projection, *std::move(secrets),
      ThingModelOptions{.bootstrap_tenant = config.bootstrap_tenant,
                        .bootstrap_admin_key = config.bootstrap_api_key,
                        .service_key = config.service_api_key});
  auto auth = std::make_shared<common::Authenticator>(
      std::make_shared<common::RedisKeyResolver>(context.redis));

  context.host.AddService(std::make_shared<TenantsHandler>(service, auth));
  context.host.AddService(std::make_shared<ProductsHandler>(service, auth));
  context.host.AddService(std::make_shared<DevicesHandler>(service, auth));
  context.host.AddService(std::make_shared<InternalHandler>(service, auth));

  context.host.AddStartupTask("bootstrap tenant, keys and projection",
                              [service] { return service->Bootstrap(); });
  // Rebuilds the Redis projection after a flush or missed writes; runs every probe interval.
  context.host.AddDependency("projection", [service] { return service->ReconcileProjection(); });
}

}  // namespace iot::thing_model
