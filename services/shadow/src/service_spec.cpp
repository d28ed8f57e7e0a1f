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

nlohmann::json ReadConfig(common::EnvReader& env) {
  using std::chrono::milliseconds;
  nlohmann::json settings;
  settings["thing_model_addr"] = env.String("IOT_THING_MODEL_ADDR", "127.0.0.1:50052");
  settings["device_gateway_addr"] = env.String("IOT_DEVICE_GATEWAY_ADDR", "127.0.0.1:50051");
  settings["service_api_key"] = env.Required("IOT_SERVICE_API_KEY");
  settings["max_document_bytes"] =
      env.Int("IOT_SHADOW_MAX_DOCUMENT_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024);
  settings["flush_interval_ms"] =
      env.Duration("IOT_SHADOW_FLUSH_INTERVAL", milliseconds(200)).count();
  settings["flush_batch"] = env.Int("IOT_SHADOW_FLUSH_BATCH", 500, 1, 10'000);
  settings["device_cache_ttl_ms"] =
      env.Duration("IOT_SHADOW_DEVICE_CACHE_TTL", milliseconds(5000)).count();
  settings["push_timeout_ms"] = env.Duration("IOT_SHADOW_PUSH_TIMEOUT", milliseconds(3000)).count();
  settings["redis_pool_size"] = env.Int("IOT_SHADOW_REDIS_POOL_SIZE", 8, 1, 256);
  // Messages remembered per device: more than a device may have in flight between the gateway
  // and the broker's acknowledgement (its uplink rate limit is 50/s by default).
  settings["dedupe_window"] = env.Int("IOT_SHADOW_DEDUPE_WINDOW", 64, 1, 4096);
  if (settings["flush_interval_ms"].get<int64_t>() <= 0) {
    env.AddError("IOT_SHADOW_FLUSH_INTERVAL", "must be positive");
  }
  return settings;
}

void Wire(common::ServiceContext& context) {
  using std::chrono::milliseconds;
  const nlohmann::json& settings = context.settings;
  const std::string service_key = settings["service_api_key"];
  auto redis = common::RedisClient::Create(
      {.url = context.backend.redis_url, .pool_size = settings["redis_pool_size"].get<size_t>()});
  if (!redis.ok()) {
    throw common::ConfigError("IOT_REDIS_URL: " + std::string(redis.status().message()));
  }
  const size_t max_bytes = settings["max_document_bytes"].get<size_t>();
  auto metrics = std::make_shared<ShadowMetrics>(context.host.metrics());
  auto service = std::make_shared<ShadowService>(
      std::make_shared<RedisLiveStore>(std::shared_ptr<common::RedisClient>(*std::move(redis)),
                                       max_bytes, settings["dedupe_window"].get<size_t>()),
      std::make_shared<PgDurableStore>(context.postgres),
      MakeThingModelDirectory(settings["thing_model_addr"], service_key,
                              milliseconds(settings["device_cache_ttl_ms"].get<int64_t>())),
      MakeGatewayPublisher(settings["device_gateway_addr"], service_key,
                           milliseconds(settings["push_timeout_ms"].get<int64_t>())),
      metrics,
      ShadowOptions{.max_document_bytes = max_bytes,
                    .flush_batch = settings["flush_batch"].get<size_t>()});
  auto auth = std::make_shared<common::Authenticator>(
      std::make_shared<common::RedisKeyResolver>(context.redis));
  context.host.AddService(std::make_shared<ShadowsHandler>(service, auth));
  context.host.AddService(std::make_shared<InternalShadowHandler>(service, auth));

  auto write_behind = std::make_shared<WriteBehind>(
      service, milliseconds(settings["flush_interval_ms"].get<int64_t>()));
  context.host.OnReady([write_behind] { write_behind->Start(); });
  context.host.OnShutdown([write_behind] { write_behind->Stop(); });
}

}  // namespace iot::shadow
