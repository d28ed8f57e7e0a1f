// rule-forwarding's Ingest as the gateway calls it, with the production wiring of its hot path:
// the records' done marks (RedisDedupe), the consumer-group appends (GroupStreams on Redis), the
// built-in history through the history writer (one COPY per group commit into PostgreSQL) and
// the rules in memory. One iteration = one Ingest call of 100 records (the gateway's batch);
// items_per_second = records/s. Not a test: it prints figures; compare builds back to back.
//   BM_Ingest/0   device.property records, new message ids: done marks, group, history
//   BM_Ingest/1   device.message records, new message ids: done marks and group (Redis only)
//   BM_Ingest/2   device.property records ingested again: every one marked done already
// PostgreSQL and Redis: IOT_TEST_PG_URL / IOT_TEST_REDIS_URL (scripts/test.sh prints them), else
// private ones. Run:
//   ingest_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <prometheus/registry.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <type_traits>

#include "destinations/history.h"
#include "iot/common/migrations.h"
#include "iot/common/postgres.h"
#include "iot/common/redis.h"
#include "iot/rule_forwarding/history_store.h"
#include "iot/rule_forwarding/history_writer.h"
#include "iot/rule_forwarding/ingest.h"
#include "iot/rule_forwarding/service_spec.h"
#include "iot/rule_forwarding/subscriptions.h"
#include "iot/testing/servers.h"

namespace iot::rule_forwarding {
namespace {

constexpr int kBatch = 100;
constexpr int kDevices = 50;
const std::string kTenant = "bench";

struct Env {
  prometheus::Registry registry;
  std::shared_ptr<common::PgPool> pool;
  std::shared_ptr<common::RedisClient> redis;
  std::shared_ptr<HistoryWriter> writer;
  std::shared_ptr<Dispatcher> dispatcher;
  std::shared_ptr<IngestService> ingest;
  std::shared_ptr<const RuleSet> rules;
};

[[noreturn]] void Fail(const std::string& what, const absl::Status& status) {
  std::cerr << "ingest_bench: " << what << ": " << status << "\n";
  std::exit(1);
}

RuleRecord ToGroup(const std::string& id, const std::string& resource) {
  return RuleRecord{.tenant_id = kTenant,
                    .rule_id = id,
                    .name = id,
                    .description = {},
                    .resource = resource,
                    .product_id = {},
                    .device_id = {},
                    .sql = "SELECT *",
                    .actions = {RuleAction{.type = "consumer_group", .config = {{"group", "all"}}}},
                    .unreadable_secrets = {},
                    .enabled = true,
                    .create_time = {},
                    .update_time = {}};
}

Env& Shared() {
  static Env* env = [] {
    auto* e = new Env();
    e->pool = std::make_shared<common::PgPool>(
        common::PgPoolOptions{.url = iot::testing::CreateTestDatabase(), .size = 8});
    if (auto applied = common::ApplyMigrations(*e->pool, "rule_forwarding", EmbeddedMigrations());
        !applied.ok()) {
      Fail("migrations", applied.status());
    }
    auto redis =
        common::RedisClient::Create({.url = iot::testing::SharedRedisUrl(), .pool_size = 8});
    if (!redis.ok()) {
      Fail("redis", redis.status());
    }
    e->redis = std::shared_ptr<common::RedisClient>(*std::move(redis));
    auto store = std::make_shared<PgHistoryStore>(e->pool, HistoryRetention{});
    if (auto made = store->Maintain(NowMs()); !made.ok()) {
      Fail("partitions", made.status());
    }
    e->writer = std::make_shared<HistoryWriter>(
        [store](std::span<const HistoryRow> rows) { return store->Insert(rows); },
        HistoryWriterOptions{});
    auto history = std::make_shared<HistoryDestination>(
        store, e->writer, std::make_shared<HistoryMetrics>(e->registry));
    auto groups = std::make_shared<PgGroupStore>(e->pool);
    auto streams = std::make_shared<GroupStreams>(e->redis);
    ConsumerGroupSettings all;
    all.tenant_id = kTenant;
    all.group_name = "all";
    auto settings = NormalizeGroup(all);
    auto group = settings.ok() ? groups->Create(*settings) : settings;
    if (!group.ok()) {
      Fail("group", group.status());
    }
    if (absl::Status s = streams->EnsureGroup(StreamKey(kTenant, "all")); !s.ok()) {
      Fail("stream", s);
    }
    auto consumer_group = MakeConsumerGroupDestination(groups, streams);
    e->dispatcher = std::make_shared<Dispatcher>(
        DestinationRegistry{{"history", history}, {"consumer_group", consumer_group}}, nullptr,
        nullptr, DispatcherOptions{});
    e->rules = RuleSet::Build({ToGroup("p", "device.property"), ToGroup("m", "device.message")});
    e->ingest = std::make_shared<IngestService>(
        [e] { return e->rules; }, std::make_shared<RedisDedupe>(e->redis, std::chrono::minutes(10)),
        e->dispatcher, std::make_shared<IngestMetrics>(e->registry), nullptr, history,
        std::vector<std::shared_ptr<Destination>>{consumer_group});
    return e;
  }();
  return *env;
}

std::vector<IngestRecord> Batch(bool property, int64_t first) {
  std::vector<IngestRecord> records;
  records.reserve(kBatch);
  const int64_t now = NowMs();
  for (int64_t n = first; n < first + kBatch; ++n) {
    const std::string device = fmt::format("meter-{}", n % kDevices);
    const std::string resource = property ? "device.property" : "device.message";
    const std::string body =
        property ? fmt::format(R"({{"services":[{{"service_id":"meter","properties":)"
                               R"({{"voltage":{},"current":{},"relay_state":"ON"}}}}]}})",
                               220 + n % 20, 4.5 + static_cast<double>(n % 7))
                 : fmt::format(R"({{"content":"message {}"}})", n);
    records.push_back(IngestRecord{
        .message_id = fmt::format("bench-{}-{}", property ? 'p' : 'm', n),
        .tenant_id = kTenant,
        .device_id = device,
        .product_id = "meter",
        .node_id = device,
        .resource = resource,
        .event = "report",
        .topic = fmt::format("$oc/devices/{}/sys/{}", device,
                             property ? "properties/report" : "messages/up"),
        .event_time_unix_ms = now,
        .envelope_json = fmt::format(
            R"({{"resource":"{}","event":"report","event_time":"20261126T200000Z",)"
            R"("notify_data":{{"header":{{"device_id":"{}","product_id":"meter","node_id":"{}",)"
            R"("tenant_id":"{}"}},"body":{}}}}})",
            resource, device, device, kTenant, body)});
  }
  return records;
}

/// The error of an Ingest answer (absl::Status, or StatusOr of the rejected records), "" if OK.
template <typename Answer>
std::string ErrorOf(const Answer& answer) {
  if constexpr (std::is_same_v<Answer, absl::Status>) {
    return answer.ok() ? "" : std::string(answer.message());
  } else {
    return answer.ok() ? "" : std::string(answer.status().message());
  }
}

std::atomic<int64_t> g_next{0};

void BM_Ingest(benchmark::State& state) {
  Env& env = Shared();
  const int variant = static_cast<int>(state.range(0));
  const bool property = variant != 1;
  // Variant 2 ingests one batch over and over: after the first call every record is done.
  const int64_t fixed = g_next.fetch_add(kBatch);
  for (auto _ : state) {
    const auto records = Batch(property, variant == 2 ? fixed : g_next.fetch_add(kBatch));
    const std::string error = ErrorOf(env.ingest->Ingest(records));
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

BENCHMARK(BM_Ingest)->Arg(0)->Arg(1)->Arg(2)->UseRealTime()->Threads(1)->Threads(4);

}  // namespace
}  // namespace iot::rule_forwarding

BENCHMARK_MAIN();
