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

std::chrono::milliseconds Ms(const nlohmann::json& settings, const char* key) {
  return std::chrono::milliseconds(settings[key].get<int64_t>());
}

/// Rules, ingest and the dispatcher with the postgres, republish and webhook destinations.
void WireRules(common::ServiceContext& context, DestinationRegistry destinations,
               std::shared_ptr<const ActionSecrets> secrets) {
  const nlohmann::json& s = context.settings;
  auto store = std::make_shared<PgRuleStore>(context.postgres, secrets);
  auto feed = std::make_shared<RedisRuleChangeFeed>(context.redis);
  auto cache = std::make_shared<RuleCache>(
      store, feed,
      RuleCacheOptions{.poll_interval = Ms(s, "rules_poll_interval_ms"),
                       .full_reload_interval = Ms(s, "rules_reload_interval_ms")});
  auto outbox = std::make_shared<PgOutbox>(
      context.postgres, "rule-forwarding-" + common::HexEncode(common::RandomBytes(8)), secrets);
  auto dispatcher = std::make_shared<Dispatcher>(
      std::move(destinations), store, std::make_shared<DispatcherMetrics>(context.host.metrics()),
      DispatcherOptions{
          .queue_capacity = s["queue_capacity"].get<size_t>(),
          .workers = s["workers"].get<size_t>(),
          .workers_by_type = {},
          .max_batch = s["max_batch"].get<size_t>(),
          .max_batch_by_type = {{"webhook", 1},
                                {"republish", 1},
                                {"consumer_group", s["consumer_group_batch"].get<size_t>()}},
          .max_attempts = s["max_attempts"].get<int>(),
          .retry_initial = Ms(s, "retry_initial_ms"),
          .retry_max = Ms(s, "retry_max_ms")},
      outbox);
  auto keeper = std::make_shared<OutboxKeeper>(outbox, dispatcher, Ms(s, "outbox_lease_ms"));
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
      std::make_shared<RedisDedupe>(context.redis, Ms(s, "dedupe_ttl_ms")), dispatcher,
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
  context.host.AddStartupTask("seal plain action secrets", [store, outbox]() -> absl::Status {
    auto sealed_rules = store->SealPlainSecrets();
    if (!sealed_rules.ok()) {
      return sealed_rules.status();
    }
    auto sealed_deliveries = outbox->SealPlainSecrets();
    if (!sealed_deliveries.ok()) {
      return sealed_deliveries.status();
    }
    if (*sealed_rules > 0 || *sealed_deliveries > 0) {
      common::LogInfo("sealed the secrets of rules stored in plain text",
                      {{"rules", *sealed_rules}, {"outbox_deliveries", *sealed_deliveries}});
    }
    return absl::OkStatus();
  });
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
std::vector<std::string> PlatformHosts(const common::ServiceContext& context) {
  std::vector<std::string> hosts;
  for (const std::string& url :
       {context.backend.pg_url, context.backend.redis_url, context.backend.mqtt_url}) {
    if (auto parsed = common::ParseUrl(url); parsed.ok()) {
      hosts.push_back(parsed->host);
    }
  }
  for (const char* peer : {"thing_model_addr", "device_gateway_addr"}) {
    const std::string address = context.settings[peer].get<std::string>();
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

nlohmann::json ReadConfig(common::EnvReader& env) {
  const std::string p = "IOT_RULE_FORWARDING_";
  nlohmann::json settings;
  settings["queue_capacity"] = env.Int(p + "QUEUE_CAPACITY", 10'000, 1, 10'000'000);
  settings["redis_pool_size"] = env.Int(p + "REDIS_POOL_SIZE", 8, 1, 256);
  settings["max_batch"] = env.Int(p + "MAX_BATCH", 100, 1, 10'000);
  // One Redis pipeline per batch; a rule's deliveries all go through one worker, in order.
  settings["consumer_group_batch"] = env.Int(p + "CONSUMER_GROUP_BATCH", 1000, 1, 10'000);
  // Rule actions' secrets are sealed at rest with the platform's key (docs/security.md).
  settings["secret_key"] = env.Required("IOT_SECRET_KEY");
  if (const std::string& key = settings["secret_key"]; !key.empty()) {
    if (auto box = common::SecretBox::FromKeyText(key); !box.ok()) {
      env.AddError("IOT_SECRET_KEY", std::string(box.status().message()));
    }
  }
  // Where rule actions may connect: public addresses, plus the operator's allow-list.
  settings["destination_allowlist"] = env.String(p + "DESTINATION_ALLOWLIST", "");
  if (auto allow = common::ParseNetworkList(settings["destination_allowlist"].get<std::string>());
      !allow.ok()) {
    env.AddError(p + "DESTINATION_ALLOWLIST", std::string(allow.status().message()));
  }
  if (!env.String(p + "WEBHOOK_ALLOW_PRIVATE", "").empty()) {
    env.AddError(p + "WEBHOOK_ALLOW_PRIVATE",
                 "replaced by IOT_RULE_FORWARDING_DESTINATION_ALLOWLIST (networks rule actions "
                 "may reach, e.g. 10.0.0.0/8,127.0.0.1/32)");
  }
  settings["workers"] = env.Int(p + "WORKERS", 4, 1, 64);
  settings["max_attempts"] = env.Int(p + "MAX_ATTEMPTS", 5, 1, 100);
  settings["retry_initial_ms"] =
      env.Duration(p + "RETRY_INITIAL", std::chrono::milliseconds(200)).count();
  settings["retry_max_ms"] = env.Duration(p + "RETRY_MAX", std::chrono::seconds(10)).count();
  settings["dedupe_ttl_ms"] = env.Duration(p + "DEDUPE_TTL", std::chrono::minutes(10)).count();
  settings["rules_poll_interval_ms"] =
      env.Duration(p + "RULES_POLL_INTERVAL", std::chrono::milliseconds(250)).count();
  settings["outbox_lease_ms"] = env.Duration(p + "OUTBOX_LEASE", std::chrono::seconds(15)).count();
  settings["rules_reload_interval_ms"] =
      env.Duration(p + "RULES_RELOAD_INTERVAL", std::chrono::seconds(30)).count();
  settings["thing_model_addr"] = env.String("IOT_THING_MODEL_ADDR", "127.0.0.1:50052");
  settings["device_gateway_addr"] = env.String("IOT_DEVICE_GATEWAY_ADDR", "127.0.0.1:50051");
  settings["service_api_key"] = env.String("IOT_SERVICE_API_KEY", "");
  settings["device_cache_ttl_ms"] =
      env.Duration(p + "DEVICE_CACHE_TTL", std::chrono::seconds(10)).count();
  ReadHistoryAndSubscriptionsConfig(env, settings);
  return settings;
}

void Wire(common::ServiceContext& context) {
  const nlohmann::json& s = context.settings;
  // Every concurrent Ingest call checks and marks its records done and appends to consumer
  // groups through this client: more connections than the services' default 2.
  auto redis = common::RedisClient::Create(
      {.url = context.backend.redis_url, .pool_size = s["redis_pool_size"].get<size_t>()});
  if (!redis.ok()) {
    throw common::ConfigError("IOT_REDIS_URL: " + std::string(redis.status().message()));
  }
  context.redis = std::shared_ptr<common::RedisClient>(*std::move(redis));
  // Republish to a device's down topic: through the gateway, to devices of the rule's tenant.
  auto downlink = MakeGatewayDownlink(
      s["thing_model_addr"].get<std::string>(), s["device_gateway_addr"].get<std::string>(),
      s["service_api_key"].get<std::string>(), Ms(s, "device_cache_ttl_ms"));
  auto egress = std::make_shared<const common::EgressPolicy>(common::EgressPolicy::Options{
      .allow = *common::ParseNetworkList(s["destination_allowlist"].get<std::string>()),
      .platform_hosts = PlatformHosts(context),
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
  RegisterHistoryAndSubscriptions(context, destinations);
  auto box = common::SecretBox::FromKeyText(s["secret_key"].get<std::string>());
  WireRules(context, std::move(destinations),
            std::make_shared<const ActionSecrets>(*std::move(box)));
}

}  // namespace iot::rule_forwarding
