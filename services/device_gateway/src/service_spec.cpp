#include "iot/device_gateway/service_spec.h"

#include <fmt/format.h>

#include "iot/common/auth.h"
#include "iot/common/logging.h"
#include "iot/common/mqtt.h"
#include "iot/common/redis_subscriber.h"
#include "iot/device_gateway/device_cache.h"
#include "iot/device_gateway/downlink.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/pipeline.h"
#include "iot/device_gateway/presence.h"
#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {
namespace {

/// The broker's count of messages dropped at its queue limits (max_queued_messages/_bytes).
constexpr std::string_view kBrokerDroppedTopic = "$SYS/broker/publish/messages/dropped";

/// The MQTT network thread's state: classification and the rate limiter (not thread-safe).
struct Intake {
  UplinkLimits limits;
  RateLimiter rate_limiter;
  double broker_dropped = 0;
};

}  // namespace

common::ServiceSpec Spec() {
  return {.name = "device-gateway",
          .env_prefix = "IOT_DEVICE_GATEWAY",
          .grpc_port = 50051,
          .metrics_port = 9101,
          .pg_schema = "",
          .migrations = nullptr,
          .uses_redis = true,
          .uses_mqtt = true,
          // Persistent session: the broker queues device uplink while the gateway restarts.
          .mqtt_session_expiry = std::chrono::hours(24)};
}

nlohmann::json ReadConfig(common::EnvReader& env) {
  nlohmann::json s;
  s["thing_model_addr"] = env.String("IOT_THING_MODEL_ADDR", "127.0.0.1:50052");
  s["shadow_addr"] = env.String("IOT_SHADOW_ADDR", "127.0.0.1:50054");
  s["command_dispatch_addr"] = env.String("IOT_COMMAND_DISPATCH_ADDR", "127.0.0.1:50053");
  s["rule_forwarding_addr"] = env.String("IOT_RULE_FORWARDING_ADDR", "127.0.0.1:50055");
  s["service_api_key"] = env.Required("IOT_SERVICE_API_KEY");
  const std::string p = "IOT_DEVICE_GATEWAY_";
  s["shards"] = env.Int(p + "SHARDS", 4, 1, 256);
  s["queue_capacity"] = env.Int(p + "QUEUE_CAPACITY", 256, 1, 1'000'000);
  s["batch_size"] = env.Int(p + "BATCH_SIZE", 100, 1, 10'000);
  s["rate_limit"] = env.Int(p + "RATE_LIMIT", 50, 1, 1'000'000);
  s["max_payload_bytes"] = env.Int(p + "MAX_PAYLOAD_BYTES", 1024 * 1024, 1, 256 * 1024 * 1024);
  s["max_report_bytes"] = env.Int(p + "MAX_REPORT_BYTES", 64 * 1024, 1, 256 * 1024 * 1024);
  s["device_cache_size"] = env.Int(p + "DEVICE_CACHE_SIZE", 100'000, 1, 10'000'000);
  s["share_group"] = env.String(p + "SHARE_GROUP", "gateway");
  s["call_timeout_ms"] = env.Duration(p + "CALL_TIMEOUT", std::chrono::seconds(5)).count();
  s["downlink_timeout_ms"] = env.Duration(p + "DOWNLINK_TIMEOUT", std::chrono::seconds(5)).count();
  return s;
}

void Wire(common::ServiceContext& context) {
  const auto& s = context.settings;
  const std::string service_key = s["service_api_key"];
  auto metrics = std::make_shared<GatewayMetrics>(context.host.metrics());
  auto devices =
      std::make_shared<DeviceCache>(MakeThingModelContextSource(s["thing_model_addr"], service_key),
                                    s["device_cache_size"].get<size_t>());
  auto publisher = MakeMqttPublisher(
      context.mqtt, std::chrono::milliseconds(s["downlink_timeout_ms"].get<int64_t>()));
  auto pipeline = std::make_shared<UplinkPipeline>(
      PipelineOptions{
          .shards = s["shards"].get<size_t>(),
          .queue_capacity = s["queue_capacity"].get<size_t>(),
          .max_batch = s["batch_size"].get<size_t>(),
          .retry_initial = std::chrono::milliseconds(100),
          .retry_max = std::chrono::seconds(5),
          .message_id_prefix = fmt::format("{}-{:x}", context.backend.mqtt_client_id, NowUnixMs())},
      devices,
      MakeGrpcDownstream(
          {.shadow = s["shadow_addr"],
           .command_dispatch = s["command_dispatch_addr"],
           .rule_forwarding = s["rule_forwarding_addr"],
           .service_key = service_key,
           .timeout = std::chrono::milliseconds(s["call_timeout_ms"].get<int64_t>())}),
      MakeThingModelStatusSink(s["thing_model_addr"], service_key), publisher, *metrics);

  auto subscriber = common::RedisSubscriber::Start(
      context.backend.redis_url, {"tm:changes"},
      [devices](const std::string&, const std::string& message) { devices->OnChange(message); },
      [devices] { devices->Clear(); });
  if (!subscriber.ok()) {
    throw common::ConfigError("IOT_REDIS_URL: " + std::string(subscriber.status().message()));
  }
  std::shared_ptr<common::RedisSubscriber> changes = *std::move(subscriber);

  auto downlink =
      std::make_shared<DownlinkService>(publisher, *metrics, s["max_payload_bytes"].get<size_t>());
  auto auth = std::make_shared<common::Authenticator>(
      std::make_shared<common::RedisKeyResolver>(context.redis));
  context.host.AddService(MakeDownlinkHandler(downlink, auth));

  // Shared with the other replicas: each message goes to one of them (broker/README.md).
  const std::string group = s["share_group"];
  for (const std::string filter : {"iot/up/+/+/sys/#", "iot/up/+/+/user/#", "iot/presence/+/+"}) {
    if (absl::Status st = context.mqtt->Subscribe(fmt::format("$share/{}/{}", group, filter), 1);
        !st.ok()) {
      throw common::ConfigError("subscribe " + filter + ": " + std::string(st.message()));
    }
  }
  if (absl::Status st = context.mqtt->Subscribe(std::string(kBrokerDroppedTopic), 0); !st.ok()) {
    throw common::ConfigError("subscribe $SYS: " + std::string(st.message()));
  }

  auto intake = std::make_shared<Intake>(
      Intake{.limits = {.max_payload_bytes = s["max_payload_bytes"].get<size_t>(),
                        .max_report_bytes = s["max_report_bytes"].get<size_t>(),
                        .rate_per_second = s["rate_limit"].get<double>()},
             .rate_limiter = RateLimiter(s["rate_limit"].get<double>()),
             .broker_dropped = 0});
  context.mqtt->SetMessageHandler([pipeline, metrics, intake](const common::MqttMessage& m) {
    const int64_t now = NowUnixMs();
    if (m.topic.starts_with(kSharedPresencePrefix)) {
      auto event = ParsePresence(m.topic, m.payload);
      if (!event.ok()) {
        metrics->Rejected(RejectReason::kMalformed);
        common::LogWarn("presence event rejected",
                        {{"topic", m.topic}, {"error", std::string(event.status().message())}});
        return;
      }
      metrics->Accepted("presence");
      pipeline->Submit(*std::move(event));
      return;
    }
    if (m.topic == kBrokerDroppedTopic) {
      const double dropped = std::strtod(m.payload.c_str(), nullptr);
      metrics->broker_dropped.Set(dropped);
      if (dropped > intake->broker_dropped) {
        common::LogError(
            "the broker dropped messages at its queue limits (max_queued_messages / "
            "max_queued_bytes): device data was lost",
            {{"dropped_total", dropped}});
      }
      intake->broker_dropped = dropped;
      return;
    }
    auto admitted = AdmitUplink(m.topic, m.payload, intake->limits, intake->rate_limiter, now);
    if (auto* rejected = std::get_if<RejectedUplink>(&admitted)) {
      metrics->Rejected(rejected->reason);
      pipeline->Submit(std::move(*rejected));  // becomes a validation_failed record
      return;
    }
    auto& message = std::get<UplinkMessage>(admitted);
    metrics->Accepted(UplinkKindName(message.kind));
    pipeline->Submit(std::move(message));
  });

  // Stop reading MQTT first (the broker keeps what follows in the session), then hand on what
  // is queued within the drain timeout.
  const auto drain = context.server.drain_timeout;
  context.host.OnShutdown([pipeline, mqtt = context.mqtt, changes, drain] {
    const auto deadline = std::chrono::steady_clock::now() + drain / 2;
    pipeline->BeginShutdown(deadline);
    mqtt->Stop();
    pipeline->Stop(deadline);
  });
}

}  // namespace iot::device_gateway
