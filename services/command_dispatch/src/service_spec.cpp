#include "iot/command_dispatch/service_spec.h"

#include <grpcpp/create_channel.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "iot/command_dispatch/adapters.h"
#include "iot/command_dispatch/grpc_handlers.h"
#include "iot/command_dispatch/pg_request_store.h"
#include "iot/common/crypto.h"
#include "iot/common/logging.h"

namespace iot::command_dispatch {
namespace {

using std::chrono::milliseconds;

/// Runs the service's sweep every interval until stopped.
class Sweeper {
 public:
  Sweeper(std::shared_ptr<DispatchService> service, milliseconds interval)
      : service_(std::move(service)), interval_(interval) {}
  ~Sweeper() { Stop(); }
  Sweeper(const Sweeper&) = delete;
  Sweeper& operator=(const Sweeper&) = delete;

  void Start() {
    thread_ = std::thread([this] {
      std::unique_lock lock(mu_);
      while (!cv_.wait_for(lock, interval_, [this] { return stop_; })) {
        lock.unlock();
        if (absl::Status s = service_->Sweep(); !s.ok()) {
          common::LogWarn("sweep failed", {{"error", std::string(s.message())}});
        }
        lock.lock();
      }
    });
  }
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

 private:
  std::shared_ptr<DispatchService> service_;
  milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

common::ServiceSpec Spec() {
  return {.name = "command-dispatch",
          .env_prefix = "IOT_COMMAND_DISPATCH",
          .grpc_port = 50053,
          .metrics_port = 9103,
          .pg_schema = "command_dispatch",
          .migrations = EmbeddedMigrations,
          .uses_redis = true,
          .uses_mqtt = false};
}

Config ReadConfig(common::EnvReader& env) {
  Config config;
  config.service_api_key = env.Required("IOT_SERVICE_API_KEY");
  config.thing_model_addr = env.String("IOT_THING_MODEL_ADDR", "127.0.0.1:50052");
  config.device_gateway_addr = env.String("IOT_DEVICE_GATEWAY_ADDR", "127.0.0.1:50051");
  config.replica_id =
      env.String("IOT_COMMAND_DISPATCH_REPLICA_ID", common::HexEncode(common::RandomBytes(8)));
  config.sweep_interval = env.Duration("IOT_COMMAND_DISPATCH_SWEEP_INTERVAL", milliseconds(1000));
  config.async_response_timeout =
      env.Duration("IOT_COMMAND_DISPATCH_ASYNC_RESPONSE_TIMEOUT", milliseconds(60'000));
  config.device_cache_ttl =
      env.Duration("IOT_COMMAND_DISPATCH_DEVICE_CACHE_TTL", milliseconds(2000));
  if (config.sweep_interval <= milliseconds(0)) {
    env.AddError("IOT_COMMAND_DISPATCH_SWEEP_INTERVAL", "must be > 0");
  }
  return config;
}

nlohmann::json ToJson(const Config& config) {
  return {{"service_api_key", config.service_api_key},
          {"thing_model_addr", config.thing_model_addr},
          {"device_gateway_addr", config.device_gateway_addr},
          {"replica_id", config.replica_id},
          {"sweep_interval_ms", config.sweep_interval.count()},
          {"async_response_timeout_ms", config.async_response_timeout.count()},
          {"device_cache_ttl_ms", config.device_cache_ttl.count()}};
}

void Wire(common::ServiceContext& context, const Config& config) {
  auto store = std::make_shared<PgRequestStore>(context.postgres);
  auto directory = std::make_shared<ThingModelDirectory>(
      grpc::CreateChannel(config.thing_model_addr, grpc::InsecureChannelCredentials()),
      config.service_api_key, config.device_cache_ttl);
  auto publisher = std::make_shared<GatewayPublisher>(
      grpc::CreateChannel(config.device_gateway_addr, grpc::InsecureChannelCredentials()),
      config.service_api_key);
  auto router = std::make_shared<RedisResponseRouter>(context.redis, context.backend.redis_url,
                                                      config.replica_id);
  auto metrics = std::make_shared<DispatchMetrics>(context.host.metrics());
  DispatchOptions options;
  options.async_response_timeout = config.async_response_timeout;
  options.replica_id = config.replica_id;
  auto service =
      std::make_shared<DispatchService>(store, directory, publisher, router, metrics, options);
  auto auth = std::make_shared<common::Authenticator>(
      std::make_shared<common::RedisKeyResolver>(context.redis));

  context.host.AddService(std::make_shared<CommandsHandler>(service, auth));
  context.host.AddService(std::make_shared<InternalHandler>(service, auth));

  context.host.AddStartupTask("response routing", [service] { return service->Start(); });
  auto sweeper = std::make_shared<Sweeper>(service, config.sweep_interval);
  context.host.OnReady([sweeper] { sweeper->Start(); });
  context.host.OnShutdown([sweeper, service] {
    sweeper->Stop();
    service->Stop();
  });
}

}  // namespace iot::command_dispatch
