#include "iot/shadow/service_spec.h"

#include "iot/common/auth.h"
#include "iot/common/redis.h"
#include "iot/shadow/grpc_handlers.h"
#include "iot/shadow/peers.h"
#include "iot/shadow/pg_durable_store.h"
#include "iot/shadow/redis_live_store.h"
#include "iot/shadow/shadow_service.h"
#include "iot/shadow/write_behind.h"

namespace iot::shadow {

common::ServiceSpec Spec() {
  return {.name = "shadow",
          .env_prefix = "IOT_SHADOW",
          .grpc_port = 50054,
          .metrics_port = 9104,
          .pg_schema = "shadow",
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = false};
}

Config ReadConfig(common::EnvReader& env) {
  using std::chrono::milliseconds;
  Config config;
  config.thing_model_addr = env.String("IOT_THING_MODEL_ADDR", "127.0.0.1:50052");
  config.device_gateway_addr = env.String("IOT_DEVICE_GATEWAY_ADDR", "127.0.0.1:50051");
  config.service_api_key = env.Required("IOT_SERVICE_API_KEY");
  config.max_document_bytes = static_cast<size_t>(
      env.Int("IOT_SHADOW_MAX_DOCUMENT_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024));
  config.flush_interval = env.Duration("IOT_SHADOW_FLUSH_INTERVAL", milliseconds(200));
  config.flush_batch = static_cast<size_t>(env.Int("IOT_SHADOW_FLUSH_BATCH", 500, 1, 10'000));
  config.device_cache_ttl = env.Duration("IOT_SHADOW_DEVICE_CACHE_TTL", milliseconds(5000));
  config.push_timeout = env.Duration("IOT_SHADOW_PUSH_TIMEOUT", milliseconds(3000));
  config.redis_pool_size = static_cast<size_t>(env.Int("IOT_SHADOW_REDIS_POOL_SIZE", 8, 1, 256));
  // Messages remembered per device: more than a device may have in flight between the gateway
  // and the broker's acknowledgement (its uplink rate limit is 50/s by default).
  config.dedupe_window = static_cast<size_t>(env.Int("IOT_SHADOW_DEDUPE_WINDOW", 64, 1, 4096));
  if (config.flush_interval <= milliseconds(0)) {
    env.AddError("IOT_SHADOW_FLUSH_INTERVAL", "must be positive");
  }
  return config;
}

nlohmann::json ToJson(const Config& config) {
  return {{"thing_model_addr", config.thing_model_addr},
          {"device_gateway_addr", config.device_gateway_addr},
          {"service_api_key", config.service_api_key},
          {"max_document_bytes", config.max_document_bytes},
          {"flush_interval_ms", config.flush_interval.count()},
          {"flush_batch", config.flush_batch},
          {"device_cache_ttl_ms", config.device_cache_ttl.count()},
          {"push_timeout_ms", config.push_timeout.count()},
          {"redis_pool_size", config.redis_pool_size},
          {"dedupe_window", config.dedupe_window}};
}

void Wire(common::ServiceContext& context, const Config& config) {
  auto redis = common::RedisClient::Create(
      {.url = context.backend.redis_url, .pool_size = config.redis_pool_size});
  if (!redis.ok()) {
    throw common::ConfigError("IOT_REDIS_URL: " + std::string(redis.status().message()));
  }
  auto metrics = std::make_shared<ShadowMetrics>(context.host.metrics());
  auto service = std::make_shared<ShadowService>(
      std::make_shared<RedisLiveStore>(std::shared_ptr<common::RedisClient>(*std::move(redis)),
                                       config.max_document_bytes, config.dedupe_window),
      std::make_shared<PgDurableStore>(context.postgres),
      MakeThingModelDirectory(config.thing_model_addr, config.service_api_key,
                              config.device_cache_ttl),
      MakeGatewayPublisher(config.device_gateway_addr, config.service_api_key, config.push_timeout),
      metrics,
      ShadowOptions{.max_document_bytes = config.max_document_bytes,
                    .flush_batch = config.flush_batch});
  auto auth = std::make_shared<common::Authenticator>(
      std::make_shared<common::RedisKeyResolver>(context.redis));
  context.host.AddService(std::make_shared<ShadowsHandler>(service, auth));
  context.host.AddService(std::make_shared<InternalShadowHandler>(service, auth));

  auto write_behind = std::make_shared<WriteBehind>(service, config.flush_interval);
  context.host.OnReady([write_behind] { write_behind->Start(); });
  context.host.OnShutdown([write_behind] { write_behind->Stop(); });
}

}  // namespace iot::shadow
