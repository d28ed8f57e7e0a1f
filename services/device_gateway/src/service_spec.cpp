#include "iot/device_gateway/service_spec.h"

#include <fmt/format.h>
#include <unistd.h>

#include "iot/common/auth.h"
#include "iot/common/logging.h"
#include "iot/common/mqtt.h"
#include "iot/common/redis_subscriber.h"
#include "iot/device_gateway/broker_control.h"
#include "iot/device_gateway/device_cache.h"
#include "iot/device_gateway/downlink.h"
#include "iot/device_gateway/grpc_clients.h"
#include "iot/device_gateway/grpc_handlers.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/mqtt_publisher.h"
#include "iot/device_gateway/partitions.h"
#include "iot/device_gateway/pg_dead_letters.h"
#include "iot/device_gateway/pipeline.h"
#include "iot/device_gateway/uplink.h"
#include "iot/device_gateway/uplink_intake.h"

namespace iot::device_gateway {
namespace {

UplinkLimits LimitsFrom(const Config& config, size_t max_json_depth) {
  return {.max_payload_bytes = config.max_payload_bytes,
          .max_report_bytes = config.max_report_bytes,
          .rate_per_second = static_cast<double>(config.rate_limit),
          .max_json_depth = max_json_depth,
          .max_topic_bytes = config.max_topic_bytes,
          .max_topic_levels = config.max_topic_levels,
          .max_id_bytes = config.max_id_bytes,
          .max_services = config.max_services,
          .max_properties = config.max_properties,
          .max_name_bytes = config.max_name_bytes,
          .max_string_bytes = config.max_string_bytes};
}

/// Uplink: one persistent session per partition this replica holds (partitions.h).
std::shared_ptr<PartitionSessions> MakeSessions(const common::ServiceContext& context,
                                                const Config& config,
                                                std::shared_ptr<UplinkPipeline> pipeline,
                                                std::shared_ptr<GatewayMetrics> metrics,
                                                const UplinkLimits& limits,
                                                std::chrono::seconds drain_timeout) {
  const auto& backend = context.backend;
  auto expiry = std::chrono::duration_cast<std::chrono::seconds>(backend.mqtt_session_expiry);
  if (expiry.count() <= 0) {
    common::LogWarn(
        "IOT_DEVICE_GATEWAY_MQTT_SESSION_EXPIRY is 0: uplink partition sessions stay persistent "
        "(24h), or the broker would drop a partition's messages while it changes hands");
    expiry = std::chrono::hours(24);
  }
  return std::make_shared<PartitionSessions>(
      common::MqttConsumerOptions{
          .url = backend.mqtt_url,
          .client_id = {},
          .username = backend.mqtt_username,
          .password = backend.mqtt_password,
          .session_expiry_seconds = static_cast<uint32_t>(expiry.count()),
          .keepalive_seconds = static_cast<uint16_t>(config.mqtt_keepalive.count()),
          .receive_maximum = config.receive_maximum,
          .subscriptions = {},
          .tls_ca_file = backend.mqtt_ca_file},
      config.share_group,
      [pipeline = std::move(pipeline), metrics = std::move(metrics), limits](
          uint32_t, const std::weak_ptr<common::MqttConsumer>& consumer) {
        auto intake = std::make_shared<UplinkIntake>(
            [pipeline](WorkItem item, UplinkPipeline::Ack ack) {
              pipeline->Submit(std::move(item), std::move(ack));
            },
            metrics, limits,
            [consumer](uint64_t token) {
              if (auto session = consumer.lock()) {
                session->Ack(token);
              }
            });
        return [intake](common::MqttDelivery&& m) { intake->OnDelivery(std::move(m)); };
      },
      drain_timeout);
}

std::shared_ptr<PartitionOwner> MakeOwner(const common::ServiceContext& context,
                                          const Config& config,
                                          const std::shared_ptr<PartitionSessions>& sessions,
                                          PartitionMetrics& partition_metrics,
                                          std::chrono::seconds drain_timeout) {
  const std::chrono::milliseconds lease = config.partition_lease;
  return std::make_shared<PartitionOwner>(
      PartitionOwner::Options{.tick = lease / 4, .drain_timeout = drain_timeout},
      std::make_unique<PartitionLeases>(
          context.redis, config.share_group,
          fmt::format("{}-{}-{:x}", context.backend.mqtt_client_id, ::getpid(), NowUnixMs()),
          lease),
      // The hooks keep the sessions alive as long as the owner.
      PartitionHooks{.start = [sessions](uint32_t p) { sessions->hooks().start(p); },
                     .stop = [sessions](uint32_t p) { return sessions->hooks().stop(p); }},
      partition_metrics);
}

/// The control connection: the broker's partition count and its dropped-message count.
void WatchBroker(const common::ServiceContext& context, std::weak_ptr<PartitionOwner> weak_owner,
                 std::shared_ptr<GatewayMetrics> metrics) {
  for (const std::string_view topic : BrokerControl::kTopics) {
    if (absl::Status st = context.mqtt->Subscribe(std::string(topic), 1); !st.ok()) {
      throw common::ConfigError("subscribe " + std::string(topic) + ": " +
                                std::string(st.message()));
    }
  }
  auto control = std::make_shared<BrokerControl>(std::move(weak_owner), std::move(metrics));
  context.mqtt->SetMessageHandler(
      [control](const common::MqttMessage& m) { control->OnMessage(m); });
}

}  // namespace

common::ServiceSpec Spec() {
  return {.name = "device-gateway",
          .env_prefix = "IOT_DEVICE_GATEWAY",
          .grpc_port = 50051,
          .metrics_port = 9101,
          .pg_schema = "device_gateway",  // dead letters
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = true,
          // Persistent session: the broker queues device uplink while the gateway restarts.
          .mqtt_session_expiry = std::chrono::hours(24)};
}

Config ReadConfig(common::EnvReader& env) {
  const auto size = [&env](const std::string& name, int64_t fallback, int64_t min, int64_t max) {
    return static_cast<size_t>(env.Int(name, fallback, min, max));
  };
  Config config;
  config.thing_model_addr = env.String("IOT_THING_MODEL_ADDR", "127.0.0.1:50052");
  config.shadow_addr = env.String("IOT_SHADOW_ADDR", "127.0.0.1:50054");
  config.command_dispatch_addr = env.String("IOT_COMMAND_DISPATCH_ADDR", "127.0.0.1:50053");
  config.rule_forwarding_addr = env.String("IOT_RULE_FORWARDING_ADDR", "127.0.0.1:50055");
  config.service_api_key = env.Required("IOT_SERVICE_API_KEY");
  const std::string p = "IOT_DEVICE_GATEWAY_";
  config.shards = size(p + "SHARDS", 16, 1, 256);
  config.receive_maximum = static_cast<uint16_t>(env.Int(p + "RECEIVE_MAXIMUM", 1000, 1, 65535));
  config.mqtt_keepalive = std::chrono::duration_cast<std::chrono::seconds>(
      env.Duration(p + "MQTT_KEEPALIVE", std::chrono::seconds(30)));
  if (config.mqtt_keepalive < std::chrono::seconds(5) ||
      config.mqtt_keepalive > std::chrono::seconds(65535)) {
    env.AddError(p + "MQTT_KEEPALIVE", "between 5s and 65535s");
  }
  config.batch_size = size(p + "BATCH_SIZE", 100, 1, 10'000);
  config.owner_batches = size(p + "OWNER_BATCHES", 4, 1, 64);
  config.max_attempts = static_cast<int>(env.Int(p + "MAX_ATTEMPTS", 3, 1, 100));
  config.rate_limit = env.Int(p + "RATE_LIMIT", 50, 1, 1'000'000);
  // At most 2 MiB: escaped into a forwarding record, a payload that is not JSON may grow six
  // times, and one record must fit in a call the owners accept (16 MiB).
  config.max_payload_bytes = size(p + "MAX_PAYLOAD_BYTES", 1024 * 1024, 1, 2 * 1024 * 1024);
  config.max_report_bytes = size(p + "MAX_REPORT_BYTES", 64 * 1024, 1, 2 * 1024 * 1024);
  // What one device message may carry (docs/security.md); the lower bounds keep every topic and
  // document of the device protocol acceptable.
  config.max_topic_bytes = size(p + "MAX_TOPIC_BYTES", 512, 260, 65'535);
  config.max_topic_levels = size(p + "MAX_TOPIC_LEVELS", 16, 8, 1'000);
  config.max_id_bytes = size(p + "MAX_ID_BYTES", 256, 129, 65'535);
  config.max_services = size(p + "MAX_SERVICES", 100, 1, 100'000);
  config.max_properties = size(p + "MAX_PROPERTIES", 500, 1, 100'000);
  config.max_name_bytes = size(p + "MAX_NAME_BYTES", 256, 64, 65'535);
  config.max_string_bytes = size(p + "MAX_STRING_BYTES", 64 * 1024, 1, 256 * 1024 * 1024);
  config.device_cache_size = size(p + "DEVICE_CACHE_SIZE", 100'000, 1, 10'000'000);
  config.share_group = env.String(p + "SHARE_GROUP", "gateway");
  config.partition_lease = env.Duration(p + "PARTITION_LEASE", std::chrono::seconds(3));
  if (config.partition_lease < std::chrono::milliseconds(300)) {
    env.AddError(p + "PARTITION_LEASE", "at least 300ms");
  }
  config.call_timeout = env.Duration(p + "CALL_TIMEOUT", std::chrono::seconds(5));
  config.downlink_timeout = env.Duration(p + "DOWNLINK_TIMEOUT", std::chrono::seconds(5));
  return config;
}

nlohmann::json ToJson(const Config& config) {
  return {{"thing_model_addr", config.thing_model_addr},
          {"shadow_addr", config.shadow_addr},
          {"command_dispatch_addr", config.command_dispatch_addr},
          {"rule_forwarding_addr", config.rule_forwarding_addr},
          {"service_api_key", config.service_api_key},
          {"shards", config.shards},
          {"receive_maximum", config.receive_maximum},
          {"mqtt_keepalive_s", config.mqtt_keepalive.count()},
          {"batch_size", config.batch_size},
          {"owner_batches", config.owner_batches},
          {"max_attempts", config.max_attempts},
          {"rate_limit", config.rate_limit},
          {"max_payload_bytes", config.max_payload_bytes},
          {"max_report_bytes", config.max_report_bytes},
          {"max_topic_bytes", config.max_topic_bytes},
          {"max_topic_levels", config.max_topic_levels},
          {"max_id_bytes", config.max_id_bytes},
          {"max_services", config.max_services},
          {"max_properties", config.max_properties},
          {"max_name_bytes", config.max_name_bytes},
          {"max_string_bytes", config.max_string_bytes},
          {"device_cache_size", config.device_cache_size},
          {"share_group", config.share_group},
          {"partition_lease_ms", config.partition_lease.count()},
          {"call_timeout_ms", config.call_timeout.count()},
          {"downlink_timeout_ms", config.downlink_timeout.count()}};
}

void Wire(common::ServiceContext& context, const Config& config) {
  const UplinkLimits limits = LimitsFrom(config, context.server.json.max_depth);
  const std::string& service_key = config.service_api_key;
  auto metrics = std::make_shared<GatewayMetrics>(context.host.metrics());
  auto devices = std::make_shared<DeviceCache>(
      MakeThingModelContextSource(config.thing_model_addr, service_key), config.device_cache_size);
  auto publisher = MakeMqttPublisher(context.mqtt, config.downlink_timeout);
  auto owners = MakeGrpcDownstream({.shadow = config.shadow_addr,
                                    .command_dispatch = config.command_dispatch_addr,
                                    .rule_forwarding = config.rule_forwarding_addr,
                                    .service_key = service_key,
                                    .timeout = config.call_timeout});
  auto pipeline = std::make_shared<UplinkPipeline>(
      PipelineOptions{
          .shards = config.shards,
          .max_batch = config.batch_size,
          .owner_batches = config.owner_batches,
          .retry_initial = std::chrono::milliseconds(100),
          .retry_max = std::chrono::seconds(5),
          .max_attempts = config.max_attempts,
          .message_id_prefix = fmt::format("{}-{:x}", context.backend.mqtt_client_id, NowUnixMs()),
          .limits = limits},
      devices, owners, MakeThingModelStatusSink(config.thing_model_addr, service_key), publisher,
      MakePgDeadLetterStore(context.postgres), *metrics);

  auto subscriber = common::RedisSubscriber::Start(
      context.backend.redis_url, {"tm:changes"},
      [devices](const std::string&, const std::string& message) { devices->OnChange(message); },
      [devices] { devices->Clear(); });
  if (!subscriber.ok()) {
    throw common::ConfigError("IOT_REDIS_URL: " + std::string(subscriber.status().message()));
  }
  std::shared_ptr<common::RedisSubscriber> changes = *std::move(subscriber);

  auto downlink = std::make_shared<DownlinkService>(publisher, *metrics, config.max_payload_bytes,
                                                    devices, owners);
  auto auth = std::make_shared<common::Authenticator>(
      std::make_shared<common::RedisKeyResolver>(context.redis));
  context.host.AddService(MakeDownlinkHandler(downlink, auth));

  const auto drain_timeout = std::chrono::seconds(60);
  auto sessions = MakeSessions(context, config, pipeline, metrics, limits, drain_timeout);
  auto partition_metrics = std::make_shared<PartitionMetrics>(context.host.metrics());
  auto owner = MakeOwner(context, config, sessions, *partition_metrics, drain_timeout);
  // The owner is held weakly: it holds (through the sessions, the pipeline and the publisher)
  // this MQTT connection, whose handler this is — a strong capture would be a reference cycle
  // that keeps all of it alive past exit (LeakSanitizer's report, docs/security.md).
  WatchBroker(context, owner, metrics);
  owner->Start();
  context.host.AddDependency("uplink partitions", [owner, sessions]() -> absl::Status {
    if (!owner->settled()) {
      return absl::UnavailableError("taking uplink partitions");
    }
    if (!sessions->AllSubscribed()) {
      return absl::UnavailableError("uplink partition sessions not subscribed yet");
    }
    return absl::OkStatus();
  });

  // Take nothing more from the broker (what follows stays in the sessions), hand on and
  // acknowledge what was taken within the drain timeout, close the sessions (the broker
  // delivers whatever is still unacknowledged again), then free the partitions for the others.
  const auto drain = context.server.drain_timeout;
  context.host.OnShutdown([pipeline, owner, sessions, partition_metrics, changes, drain] {
    const auto deadline = std::chrono::steady_clock::now() + drain / 2;
    owner->Stop();
    pipeline->Stop(deadline);
    sessions->StopAll();
    owner->ReleaseAll();
  });
}

}  // namespace iot::device_gateway
