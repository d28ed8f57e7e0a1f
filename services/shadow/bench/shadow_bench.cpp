// Report merges per second through the shadow's internal RPC (InternalShadow.ReportProperties,
// in-process gRPC server, real Redis, PostgreSQL write-behind running) against a bare Redis
// EVALSHA loop of the same merge script, in the same run; prints the medians and their ratio.
//
// Needs IOT_TEST_REDIS_URL and IOT_TEST_PG_URL (scripts/test.sh prints them; scripts/stack.sh
// gives a stack). Run:
//   shadow_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <vector>

#include "iot/common/auth.h"
#include "iot/common/migrations.h"
#include "iot/common/postgres.h"
#include "iot/common/redis.h"
#include "iot/shadow/grpc_handlers.h"
#include "iot/shadow/pg_durable_store.h"
#include "iot/shadow/redis_live_store.h"
#include "iot/shadow/service_spec.h"
#include "iot/shadow/shadow_service.h"
#include "iot/shadow/write_behind.h"

namespace {

using iot::shadow::RedisLiveStore;
namespace pb = iot::shadow::v1;

constexpr int kDevices = 200;
const std::string kServiceKey = "shadow-bench-service-key-0123456789";

/// Every key is the service key (the bench has no thing-model).
class ServiceKeyResolver final : public iot::common::KeyResolver {
 public:
  absl::StatusOr<iot::common::Principal> Resolve(const std::string&) override {
    return iot::common::Principal{.tenant_id = "",
                                  .role = iot::common::Role::kService,
                                  .key_id = "bench",
                                  .root_tenant = false};
  }
};

/// Not on the report path.
class NoDirectory final : public iot::shadow::DeviceDirectory {
 public:
  absl::StatusOr<iot::shadow::DeviceInfo> Find(const std::string&) override {
    return absl::UnimplementedError("bench");
  }
};
class NoPublisher final : public iot::shadow::DevicePublisher {
 public:
  absl::StatusOr<bool> PublishPropertySet(const std::string&, const std::string&,
                                          const std::string&, const std::string&) override {
    return false;
  }
};

std::string Services(int64_t n) {
  return fmt::format(
      R"([{{"service_id":"meter","properties":{{"voltage":{},"current":{},"total_energy":{},)"
      R"("relay_state":"ON","report_interval":60}}}}])",
      220 + n % 20, 4.5 + static_cast<double>(n % 7), 18234.5 + static_cast<double>(n));
}

struct Env {
  std::string redis_url;
  std::string pg_url;
  std::shared_ptr<iot::common::RedisClient> redis;
  std::shared_ptr<iot::shadow::ShadowService> service;
  std::shared_ptr<iot::shadow::ShadowMetrics> metrics;
  std::unique_ptr<iot::shadow::WriteBehind> write_behind;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<pb::InternalShadow::Stub> stub;
  prometheus::Registry registry;
  std::shared_ptr<iot::shadow::InternalShadowHandler> handler;
};

Env* g_env = nullptr;
std::map<std::string, std::vector<double>> g_rates;  // benchmark -> merges/s per repetition
int64_t g_seq = 0;

bool SetUp() {
  const char* redis_url = std::getenv("IOT_TEST_REDIS_URL");
  const char* pg_url = std::getenv("IOT_TEST_PG_URL");
  if (redis_url == nullptr || pg_url == nullptr) {
    std::cerr << "shadow_bench: skipped: set IOT_TEST_REDIS_URL and IOT_TEST_PG_URL "
                 "(e.g. from the env file scripts/test.sh prints)\n";
    return false;
  }
  auto* env = new Env();
  env->redis_url = redis_url;
  env->pg_url = pg_url;
  env->redis = std::shared_ptr<iot::common::RedisClient>(
      *iot::common::RedisClient::Create({.url = redis_url, .pool_size = 8}));
  auto pool = std::make_shared<iot::common::PgPool>(iot::common::PgPoolOptions{.url = pg_url});
  if (auto applied =
          iot::common::ApplyMigrations(*pool, "shadow", iot::shadow::EmbeddedMigrations());
      !applied.ok()) {
    std::cerr << "shadow_bench: migrations failed: " << applied.status() << "\n";
    return false;
  }
  env->metrics = std::make_shared<iot::shadow::ShadowMetrics>(env->registry);
  env->service = std::make_shared<iot::shadow::ShadowService>(
      std::make_shared<RedisLiveStore>(env->redis, 64 * 1024, 64),
      std::make_shared<iot::shadow::PgDurableStore>(pool), std::make_shared<NoDirectory>(),
      std::make_shared<NoPublisher>(), env->metrics);
  env->write_behind =
      std::make_unique<iot::shadow::WriteBehind>(env->service, std::chrono::milliseconds(200));
  env->write_behind->Start();
  env->handler = std::make_shared<iot::shadow::InternalShadowHandler>(
      env->service,
      std::make_shared<iot::common::Authenticator>(std::make_shared<ServiceKeyResolver>()));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(env->handler.get());
  env->server = builder.BuildAndStart();
  env->stub = pb::InternalShadow::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  g_env = env;
  return true;
}

void Record(benchmark::State& state, const char* name, std::chrono::steady_clock::duration took,
            int64_t merges) {
  const double rate = static_cast<double>(merges) / std::chrono::duration<double>(took).count();
  g_rates[name].push_back(rate);
  state.SetItemsProcessed(merges);
}

/// `batch` reports per ReportProperties call, device after device.
void ReportViaRpc(benchmark::State& state, const char* name) {
  const int batch = static_cast<int>(state.range(0));
  int64_t merges = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    pb::ReportPropertiesRequest request;
    for (int i = 0; i < batch; ++i) {
      const int64_t n = ++g_seq;
      pb::PropertyReport* report = request.add_reports();
      report->set_message_id(fmt::format("bench-{}", n));
      report->mutable_device()->set_tenant_id("bench");
      report->mutable_device()->set_device_id(fmt::format("bench-dev-{}", n % kDevices));
      report->set_services_json(Services(n));
    }
    grpc::ClientContext context;
    iot::common::SetBearer(context, kServiceKey);
    iot::device_gateway::v1::IngestAck ack;
    if (grpc::Status status = g_env->stub->ReportProperties(&context, request, &ack);
        !status.ok()) {
      state.SkipWithError(status.error_message().c_str());
      return;
    }
    merges += batch;
  }
  Record(state, name, std::chrono::steady_clock::now() - start, merges);
}

void BM_ReportViaInternalRpc(benchmark::State& state) {
  ReportViaRpc(state, state.range(0) == 1 ? "rpc, 1 report/call" : "rpc, 16 reports/call");
}

/// The bare loop that does the same number of merges per round trip as `name`.
const char* BareFor(const std::string& name) {
  return name.find("16") != std::string::npos ? "bare, 16 EVALSHA/trip" : "bare, 1 EVALSHA/trip";
}

/// The same merge script with the same arguments, no gRPC, no JSON parsing: one EVALSHA per
/// round trip, or `batch` pipelined per round trip (what one RPC with `batch` reports costs).
void BM_BareRedisEvalsha(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  auto sha = g_env->redis->Command({"SCRIPT", "LOAD", RedisLiveStore::MergeScript()});
  if (!sha.ok()) {
    state.SkipWithError("SCRIPT LOAD failed");
    return;
  }
  int64_t merges = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    std::vector<std::vector<std::string>> commands;
    const int64_t now = iot::shadow::NowMs();
    for (int i = 0; i < batch; ++i) {
      const int64_t n = ++g_seq;
      RedisLiveStore::ReportWrite write;
      write.device_id = fmt::format("bench-dev-{}", n % kDevices);
      write.tenant_id = "bench";
      write.message_id = fmt::format("bench-{}", n);
      for (const char* name :
           {"voltage", "current", "total_energy", "relay_state", "report_interval"}) {
        write.fields.emplace_back(iot::shadow::PropertyField('r', "meter", name),
                                  iot::shadow::Stamp(now, std::to_string(n % 1000)));
      }
      write.fields.emplace_back(iot::shadow::ServiceTimeField('R', "meter"),
                                iot::shadow::Stamp(now, iot::shadow::IotdaTime(now)));
      commands.push_back(RedisLiveStore::MergeArgs(sha->str, write, 64 * 1024, now, 64));
    }
    auto replies = g_env->redis->Pipeline(commands);
    if (!replies.ok() || replies->front().is_error()) {
      state.SkipWithError("EVALSHA failed");
      return;
    }
    merges += batch;
  }
  Record(state, batch == 1 ? "bare, 1 EVALSHA/trip" : "bare, 16 EVALSHA/trip",
         std::chrono::steady_clock::now() - start, merges);
}

BENCHMARK(BM_BareRedisEvalsha)->Arg(1)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_BareRedisEvalsha)->Arg(16)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_ReportViaInternalRpc)->Arg(1)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_ReportViaInternalRpc)->Arg(16)->UseRealTime()->MinTime(2.0);

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (!SetUp()) {
    return 0;
  }
  benchmark::RunSpecifiedBenchmarks();
  // Let the write-behind catch up, then report what it wrote.
  g_env->write_behind->Stop();
  std::cout << "\nmedian merges/s (" << kDevices << " devices, 5 properties per report):\n";
  for (const auto& [name, rates] : g_rates) {
    const double median = Median(rates);
    const double bare = Median(g_rates[BareFor(name)]);
    std::cout << fmt::format("  {:<24} {:>8.0f}/s   ratio to '{}': {:.2f}\n", name, median,
                             BareFor(name), bare > 0 ? median / bare : 0.0);
  }
  std::cout << fmt::format(
      "write-behind: {:.0f} device rows in {:.0f} PostgreSQL batches ({:.0f} failed)\n",
      g_env->metrics->flushed_devices.Value(), g_env->metrics->flush_batches.Value(),
      g_env->metrics->flush_failures.Value());
  benchmark::Shutdown();
  return 0;
}
