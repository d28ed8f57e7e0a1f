// Records through the ingest path's routing and the dispatcher with 100 rules loaded: parse the
// envelope, evaluate every rule of the tenant, build the deliveries, enqueue them, deliver them
// to a destination that only counts. Run:
//   rules_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
// items_per_second = records/s; `deliveries` = deliveries per record (10 of the 100 rules match).
// With IOT_BENCH_PG_URL (an empty database; the schema is migrated) also the durable outbox:
// one Add + Remove round of 100 deliveries, items_per_second = deliveries/s.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <iostream>

#include "iot/common/migrations.h"
#include "iot/common/postgres.h"
#include "iot/rule_forwarding/dispatcher.h"
#include "iot/rule_forwarding/ingest.h"
#include "iot/rule_forwarding/outbox.h"
#include "iot/rule_forwarding/rules.h"
#include "iot/rule_forwarding/service_spec.h"

namespace iot::rule_forwarding {
namespace {

class CountingDestination final : public Destination {
 public:
  [[nodiscard]] std::string_view type() const override { return "republish"; }
  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& /*config*/) const override {
    return absl::OkStatus();
  }
  absl::Status Deliver(std::span<const Delivery> batch) override {
    delivered += batch.size();
    return absl::OkStatus();
  }
  std::atomic<size_t> delivered{0};
};

std::shared_ptr<const RuleSet> HundredRules() {
  const std::string p = "notify_data.body.services[0].properties.";
  std::vector<RuleRecord> rules;
  for (int i = 0; i < 100; ++i) {
    RuleRecord r;
    r.tenant_id = "t1";
    r.rule_id = "rule-" + std::to_string(i);
    r.name = r.rule_id;
    r.resource = "device.property";
    // Every tenth rule matches the benchmark's record (voltage 229.5, relay ON).
    const int threshold = i % 10 == 0 ? 220 : 240 + i;
    r.sql = "SELECT device_id() AS device, " + p + "voltage AS voltage, " + p +
            "current AS current FROM '$oc/devices/+/sys/properties/report' WHERE " + p +
            "voltage > " + std::to_string(threshold) + " AND " + p + "relay_state = 'ON' AND " + p +
            "current < 100";
    r.actions.push_back(RuleAction{.type = "republish", .config = {{"topic", "bench"}}});
    rules.push_back(std::move(r));
  }
  auto set = RuleSet::Build(std::move(rules));
  if (set->size() != 100) {
    std::cerr << "rules did not compile\n";
    std::abort();
  }
  return set;
}

const std::string kEnvelope =
    R"({"resource":"device.property","event":"report","event_time":"20261126T174248Z",
        "notify_data":{"header":{"device_id":"p1_n1","product_id":"p1","node_id":"n1",
        "tenant_id":"t1"},"body":{"services":[{"service_id":"meter","properties":{
        "voltage":229.5,"current":3.2,"relay_state":"ON"},"event_time":"20261126T174248Z"}]}}})";

void BM_RouteAndDispatch100Rules(benchmark::State& state) {
  auto rules = HundredRules();
  auto destination = std::make_shared<CountingDestination>();
  DestinationRegistry registry{{"republish", destination}};
  Dispatcher dispatcher(registry, nullptr, nullptr,
                        DispatcherOptions{.queue_capacity = 1'000'000,
                                          .workers = 1,
                                          .workers_by_type = {},
                                          .max_batch = 100,
                                          .max_batch_by_type = {},
                                          .max_attempts = 1,
                                          .retry_initial = std::chrono::milliseconds(1),
                                          .retry_max = std::chrono::milliseconds(1)});
  dispatcher.Start();
  IngestRecord record{.message_id = "",
                      .tenant_id = "t1",
                      .device_id = "p1_n1",
                      .product_id = "p1",
                      .node_id = "n1",
                      .resource = "device.property",
                      .event = "report",
                      .topic = "$oc/devices/p1_n1/sys/properties/report",
                      .event_time_unix_ms = 0,
                      .envelope_json = kEnvelope};
  size_t n = 0;
  for (auto _ : state) {
    record.message_id = std::to_string(n++);
    const auto envelope = nlohmann::json::parse(record.envelope_json);
    auto items = Route(*rules, record, envelope, 0, false);
    while (!dispatcher.Enqueue(items).ok()) {
      dispatcher.WaitIdle(std::chrono::milliseconds(10));
    }
  }
  dispatcher.WaitIdle(std::chrono::seconds(60));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["deliveries"] =
      static_cast<double>(destination->delivered.load()) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_RouteAndDispatch100Rules)->UseRealTime();

void BM_OutboxAddRemove100(benchmark::State& state) {
  const char* url = std::getenv("IOT_BENCH_PG_URL");
  if (url == nullptr || *url == '\0') {
    state.SkipWithError("set IOT_BENCH_PG_URL to measure the outbox");
    return;
  }
  auto pool = std::make_shared<common::PgPool>(common::PgPoolOptions{.url = url});
  if (auto applied = common::ApplyMigrations(*pool, "rule_forwarding", EmbeddedMigrations());
      !applied.ok()) {
    state.SkipWithError(std::string(applied.status().message()).c_str());
    return;
  }
  PgOutbox outbox(
      pool, "bench",
      std::make_shared<const ActionSecrets>(*common::SecretBox::FromKeyText(std::string(64, 'b'))));
  auto rules = HundredRules();
  IngestRecord record{.message_id = "m",
                      .tenant_id = "t1",
                      .device_id = "p1_n1",
                      .product_id = "p1",
                      .node_id = "n1",
                      .resource = "device.property",
                      .event = "report",
                      .topic = "$oc/devices/p1_n1/sys/properties/report",
                      .event_time_unix_ms = 0,
                      .envelope_json = kEnvelope};
  const auto envelope = nlohmann::json::parse(kEnvelope);
  std::vector<DispatchItem> items;
  for (int i = 0; i < 10; ++i) {
    for (auto& item : Route(*rules, record, envelope, 0, false)) {
      items.push_back(std::move(item));
    }
  }
  for (auto _ : state) {
    if (!outbox.Add(items).ok()) {
      state.SkipWithError("outbox Add failed");
      return;
    }
    std::vector<int64_t> ids;
    for (const auto& item : items) {
      ids.push_back(item.outbox_id);
    }
    if (!outbox.Remove(ids).ok()) {
      state.SkipWithError("outbox Remove failed");
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(items.size()));
}
BENCHMARK(BM_OutboxAddRemove100)->UseRealTime();

}  // namespace
}  // namespace iot::rule_forwarding

BENCHMARK_MAIN();
