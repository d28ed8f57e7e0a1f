#include "iot/rule_forwarding/service_spec.h"

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/common/egress.h"
#include "iot/common/logging.h"
#include "iot/common/redis.h"
#include "iot/common/url.h"
#include "iot/rule_forwarding/destinations.h"
#include "iot/rule_forwarding/dispatcher.h"
#include "iot/rule_forwarding/history_subscriptions.h"
#include "iot/rule_forwarding/ingest.h"
#include "iot/rule_forwarding/outbox.h"
#include "iot/rule_forwarding/rules.h"
#include "iot/rule_forwarding/rules_handlers.h"

namespace iot::rule_forwarding {
namespace {

/// Seals the action secrets of rules and outbox rows stored in plain text by older versions.
absl::Status SealPlainSecrets(PgRuleStore& store, PgOutbox& outbox) {
  auto sealed_rules = store.SealPlainSecrets();
  if (!sealed_rules.ok()) {
    return sealed_rules.status();
  }
  auto sealed_deliveries = outbox.SealPlainSecrets();
  if (!sealed_deliveries.ok()) {
    return sealed_deliveries.status();
  }
  if (*sealed_rules > 0 || *sealed_deliveries > 0) {
    common::LogInfo("sealed the secrets of rules stored in plain text",
                    {{"rules", *sealed_rules}, {"outbox_deliveries", *sealed_deliveries}});
  }
  return absl::OkStatus();
}

/// Rules, ingest and the dispatcher with the postgres, republish and webhook destinations.
void WireRules(common::ServiceContext& context, const Config& config,
               DestinationRegistry destinations,
               const std::shared_ptr<const ActionSecrets>& secrets) {
  auto store = std::make_shared<PgRuleStore>(context.postgres, secrets);
  auto feed = std::make_shared<RedisRuleChangeFeed>(context.redis);
  auto cache = std::make_shared<RuleCache>(
      store, feed,
      RuleCacheOptions{.poll_interval = config.rules_poll_interval,
                       .full_reload_interval = config.rules_reload_interval});
  auto outbox = std::make_shared<PgOutbox>(
      context.postgres, "rule-forwarding-" + common::HexEncode(common::RandomBytes(8)), secrets);
  auto dispatcher = std::make_shared<Dispatcher>(
      std::move(destinations), store, std::make_shared<DispatcherMetrics>(context.host.metrics()),
      DispatcherOptions{.queue_capacity = config.queue_capacity,
                        .workers = config.workers,
                        .workers_by_type = {},
                        .max_batch = config.max_batch,
                        .max_batch_by_type = {{"webhook", 1},
                                              {"republish", 1},
                                              {"consumer_group", config.consumer_group_batch}},
                        .max_attempts = config.max_attempts,
                        .retry_initial = config.retry_initial,
                        .retry_max = config.retry_max},
      outbox);
  auto keeper = std::make_shared<OutboxKeeper>(outbox, dispatcher, config.outbox_lease);
  auto on_change = [feed, cache] {
    if (absl::Status st = feed->Publish(); !st.ok()) {
      common::LogWarn("cannot announce a rule change (replicas catch up on their periodic reload)",
                      {{"error", std::string(st.message())}});
    }
    if (absl::Status st = cache->Reload(); !st.ok()) {
      common::LogWarn("rule reload failed", {{"error", std::string(st.message())}});
    }
  };
  auto rules = std::make_shared<RulesService>(store, dispatcher->destinations(), on_change);
  // The built-in history and consumer-group appends are done before Ingest answers, without
  // the outbox round trips (both are idempotent on the delivery id).
  const auto& registered = dispatcher->destinations();
  const auto history = registered.find("history");
  const auto groups = registered.find("consumer_group");
  auto ingest = std::make_shared<IngestService>(
      [cache] { return cache->snapshot(); },
      std::make_shared<RedisDedupe>(context.redis, config.dedupe_ttl), dispatcher,
      std::make_shared<IngestMetrics>(context.host.metrics()), outbox,
      history != registered.end() ? history->second : nullptr,
      groups != registered.end() ? std::vector<std::shared_ptr<Destination>>{groups->second}
                                 : std::vector<std::shared_ptr<Destination>>{});
  auto auth = std::make_shared<common::Authenticator>(
      std::make_shared<common::RedisKeyResolver>(context.redis));

  context.host.AddService(std::make_shared<RulesHandler>(rules, auth));
  context.host.AddService(std::make_shared<IngestHandler>(ingest, auth));
  // Rows stored before action secrets were sealed (migration 006) are sealed before anything
  // reads them for delivery.
  context.host.AddStartupTask("seal plain action secrets",
                              [store, outbox] { return SealPlainSecrets(*store, *outbox); });
  context.host.AddStartupTask("load rules", [cache] { return cache->Reload(); });
  context.host.AddStartupTask("outbox owner", [outbox] { return outbox->Heartbeat(); });
  context.host.OnReady([cache, keeper] {
    cache->Start();
    keeper->Start();
  });
  dispatcher->Start();
  context.host.OnShutdown(
      [cache, dispatcher, keeper, outbox, drain = context.server.drain_timeout] {
        cache->Stop();
        keeper->Stop();
        dispatcher->Stop(drain);
        // What is left in the outbox goes to the other replicas at their next sweep.
        if (absl::Status st = outbox->Retire(); !st.ok()) {
          common::LogWarn("cannot retire the outbox owner (others take over after the lease)",
                          {{"error", std::string(st.message())}});
        }
      });
}

/// The hosts of the platform's own services and stores, as this service is configured to reach
/// them: rule actions may not connect there (unless the allow-list says so).
std::vector<std::string> PlatformHosts(const common::ServiceContext& context,
                                       const Config& config) {
  std::vector<std::string> hosts;
  for (const std::string& url :
       {context.backend.pg_url, context.backend.redis_url, context.backend.mqtt_url}) {
    if (auto parsed = common::ParseUrl(url); parsed.ok()) {
      hosts.push_back(parsed->host);
    }
  }
  for (const std::string& address : {config.thing_model_addr, config.device_gateway_addr}) {
    if (auto parsed = common::ParseUrl("grpc://" + address); parsed.ok()) {
      hosts.push_back(parsed->host);
    }
  }
  return hosts;
}

}  // namespace

common::ServiceSpec Spec() {
  return {.name = "rule-forwarding",
          .env_prefix = "IOT_RULE_FORWARDING",
          .grpc_port = 50055,
          .metrics_port = 9105,
          .pg_schema = "rule_forwarding",
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = true};
}

Config ReadConfig(common::EnvReader& env) {
  const std::string p = "IOT_RULE_FORWARDING_";
  Config config;
  config.queue_capacity = static_cast<size_t>(env.Int(p + "QUEUE_CAPACITY", 10'000, 1, 10'000'000));
  config.redis_pool_size = static_cast<size_t>(env.Int(p + "REDIS_POOL_SIZE", 8, 1, 256));
  config.max_batch = static_cast<size_t>(env.Int(p + "MAX_BATCH", 100, 1, 10'000));
  // One Redis pipeline per batch; a rule's deliveries all go through one worker, in order.
  config.consumer_group_batch =
      static_cast<size_t>(env.Int(p + "CONSUMER_GROUP_BATCH", 1000, 1, 10'000));
  // Rule actions' secrets are sealed at rest with the platform's key (docs/security.md).
  config.secret_key = env.Required("IOT_SECRET_KEY");
  if (!config.secret_key.empty()) {
    if (auto box = common::SecretBox::FromKeyText(config.secret_key); !box.ok()) {
      env.AddError("IOT_SECRET_KEY", std::string(box.status().message()));
    }
  }
  // Where rule actions may connect: public addresses, plus the operator's allow-list.
  config.destination_allowlist = env.String(p + "DESTINATION_ALLOWLIST", "");
  if (auto allow = common::ParseNetworkList(config.destination_allowlist); !allow.ok()) {
    env.AddError(p + "DESTINATION_ALLOWLIST", std::string(allow.status().message()));
  }
  if (!env.String(p + "WEBHOOK_ALLOW_PRIVATE", "").empty()) {
    env.AddError(p + "WEBHOOK_ALLOW_PRIVATE",
                 "replaced by IOT_RULE_FORWARDING_DESTINATION_ALLOWLIST (networks rule actions "
                 "may reach, e.g. 10.0.0.0/8,127.0.0.1/32)");
  }
  config.workers = static_cast<size_t>(env.Int(p + "WORKERS", 4, 1, 64));
  config.max_attempts = static_cast<int>(env.Int(p + "MAX_ATTEMPTS", 5, 1, 100));
  config.retry_initial = env.Duration(p + "RETRY_INITIAL", std::chrono::milliseconds(200));
  config.retry_max = env.Duration(p + "RETRY_MAX", std::chrono::seconds(10));
  config.dedupe_ttl = env.Duration(p + "DEDUPE_TTL", std::chrono::minutes(10));
  config.rules_poll_interval =
      env.Duration(p + "RULES_POLL_INTERVAL", std::chrono::milliseconds(250));
  config.outbox_lease = env.Duration(p + "OUTBOX_LEASE", std::chrono::seconds(15));
  config.rules_reload_interval =
      env.Duration(p + "RULES_RELOAD_INTERVAL", std::chrono::seconds(30));
  config.thing_model_addr = env.String("IOT_THING_MODEL_ADDR", "127.0.0.1:50052");
  config.device_gateway_addr = env.String("IOT_DEVICE_GATEWAY_ADDR", "127.0.0.1:50051");
  config.service_api_key = env.String("IOT_SERVICE_API_KEY", "");
  config.device_cache_ttl = env.Duration(p + "DEVICE_CACHE_TTL", std::chrono::seconds(10));
  config.history = ReadHistoryConfig(env);
  return config;
}

nlohmann::json ToJson(const Config& config) {
  nlohmann::json json = {{"queue_capacity", config.queue_capacity},
                         {"redis_pool_size", config.redis_pool_size},
                         {"max_batch", config.max_batch},
                         {"consumer_group_batch", config.consumer_group_batch},
                         {"secret_key", config.secret_key},
                         {"destination_allowlist", config.destination_allowlist},
                         {"workers", config.workers},
                         {"max_attempts", config.max_attempts},
                         {"retry_initial_ms", config.retry_initial.count()},
                         {"retry_max_ms", config.retry_max.count()},
                         {"dedupe_ttl_ms", config.dedupe_ttl.count()},
                         {"rules_poll_interval_ms", config.rules_poll_interval.count()},
                         {"outbox_lease_ms", config.outbox_lease.count()},
                         {"rules_reload_interval_ms", config.rules_reload_interval.count()},
                         {"thing_model_addr", config.thing_model_addr},
                         {"device_gateway_addr", config.device_gateway_addr},
                         {"service_api_key", config.service_api_key},
                         {"device_cache_ttl_ms", config.device_cache_ttl.count()}};
  json.update(ToJson(config.history));
  return json;
}

void Wire(common::ServiceContext& context, const Config& config) {
  // Every concurrent Ingest call checks and marks its records done and appends to consumer
  // groups through this client: more connections than the services' default 2.
  auto redis = common::RedisClient::Create(
      {.url = context.backend.redis_url, .pool_size = config.redis_pool_size});
  if (!redis.ok()) {
    throw common::ConfigError("IOT_REDIS_URL: " + std::string(redis.status().message()));
  }
  context.redis = std::shared_ptr<common::RedisClient>(*std::move(redis));
  // Republish to a device's down topic: through the gateway, to devices of the rule's tenant.
  auto downlink = MakeGatewayDownlink(config.thing_model_addr, config.device_gateway_addr,
                                      config.service_api_key, config.device_cache_ttl);
  auto egress = std::make_shared<const common::EgressPolicy>(common::EgressPolicy::Options{
      .allow = *common::ParseNetworkList(config.destination_allowlist),
      .platform_hosts = PlatformHosts(context, config),
      .refuse_local_interfaces = true,
      .resolver = {},
      .platform_refresh = std::chrono::seconds(60)});
  DestinationRegistry destinations;
  for (auto destination :
       {MakePostgresDestination(egress), MakeRepublishDestination(context.mqtt, downlink),
        MakeWebhookDestination(egress)}) {
    destinations.emplace(std::string(destination->type()), destination);
  }
  // Telemetry history and subscriptions: the `history` and `consumer_group` destination types,
  // their services and background tasks, before the dispatcher takes the registry.
  RegisterHistoryAndSubscriptions(context, config.history, destinations);
  auto box = common::SecretBox::FromKeyText(config.secret_key);
  WireRules(context, config, std::move(destinations),
            std::make_shared<const ActionSecrets>(*std::move(box)));
}

}  // namespace iot::rule_forwarding
