// Rule SQL throughput. Run:
//   rule_sql_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "iot/rule_forwarding/sql/rule_sql.h"

namespace {

using iot::rule_forwarding::sql::CompiledRule;
using iot::rule_forwarding::sql::CompileRule;
using iot::rule_forwarding::sql::EvalContext;

const nlohmann::json& Envelope() {
  static const nlohmann::json kEnvelope = nlohmann::json::parse(
      R"({"resource":"device.property","event":"report","event_time":"20261126T174248Z",
          "notify_data":{"header":{"device_id":"p1_n1","product_id":"p1","node_id":"n1",
          "tenant_id":"t1"},"body":{"services":[{"service_id":"meter","properties":{
          "voltage":229.5,"current":3.2,"relay_state":"ON"},"event_time":"20261126T174248Z"}]}}})");
  return kEnvelope;
}

const EvalContext kContext{"$oc/devices/p1_n1/sys/properties/report", 1795714968000, "t1"};

constexpr const char* kTypicalRule =
    "SELECT notify_data.header.device_id AS device, "
    "notify_data.body.services[0].properties.voltage AS voltage, timestamp() AS ts "
    "FROM '$oc/devices/+/sys/properties/report' "
    "WHERE resource = 'device.property' "
    "AND notify_data.body.services[0].properties.voltage > 220 "
    "AND notify_data.body.services[0].properties.relay_state = 'ON'";

CompiledRule MustCompile(const std::string& sql) {
  auto rule = CompileRule(sql);
  if (!rule.ok()) {
    std::cerr << sql << ": " << rule.status() << "\n";
    std::abort();
  }
  return *std::move(rule);
}

// 100 distinct rules of the shapes people write: thresholds, states, LIKE and IN on ids,
// functions in SELECT, different topic filters (some never match this message).
std::vector<CompiledRule> HundredRules() {
  const std::string p = "notify_data.body.services[0].properties.";
  std::vector<CompiledRule> rules;
  for (int i = 0; i < 100; ++i) {
    const std::string n = std::to_string(i);
    std::string sql;
    switch (i % 5) {
      case 0:
        sql = "SELECT " + p + "voltage, " + p + "current, device_id() FROM '$oc/devices/+/sys/" +
              "properties/report' WHERE " + p + "voltage > " + std::to_string(200 + i) + " AND " +
              p + "relay_state = 'ON'";
        break;
      case 1:
        sql =
            "SELECT * WHERE resource = 'device.property' AND notify_data.header.product_id IN "
            "('p" +
            n + "', 'p1', 'x') AND " + p + "current BETWEEN 0 AND " + n;
        break;
      case 2:
        sql = "SELECT round(" + p + "voltage * " + p + "current, 1) AS power_" + n +
              ", concat(device_id(), '/', topic(6)) AS key FROM '$oc/devices/p" + n +
              "/sys/#', '$oc/devices/+/sys/properties/#' WHERE device_id() LIKE 'p" + n + "%'";
        break;
      case 3:
        sql = "SELECT upper(" + p +
              "relay_state) AS state, timestamp() AS ts FROM "
              "'$oc/devices/+/sys/events/up' WHERE " +
              p + "relay_state <> 'OFF'";
        break;
      default:
        sql = "SELECT " + p + "voltage AS v" + n + ", CASE WHEN " + p +
              "voltage > 230 THEN 'high' ELSE 'ok' END AS level WHERE "
              "notify_data.header.tenant_id = 't1' AND (" +
              p + "voltage < " + std::to_string(100 + 3 * i) + " OR " + p +
              "current IS NULL) AND NOT " + p + "relay_state = 'FAULT'";
        break;
    }
    rules.push_back(MustCompile(sql));
  }
  return rules;
}

void BM_TypicalEvaluate(benchmark::State& state) {
  const CompiledRule rule = MustCompile(kTypicalRule);
  const nlohmann::json& envelope = Envelope();
  for (auto _ : state) {
    auto out = rule.Evaluate(envelope, kContext);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TypicalEvaluate);

void BM_TypicalMatches(benchmark::State& state) {
  const CompiledRule rule = MustCompile(kTypicalRule);
  const nlohmann::json& envelope = Envelope();
  for (auto _ : state) {
    bool matches = rule.Matches(envelope, kContext);
    benchmark::DoNotOptimize(matches);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TypicalMatches);

void BM_TypicalCompile(benchmark::State& state) {
  for (auto _ : state) {
    auto rule = CompileRule(kTypicalRule);
    benchmark::DoNotOptimize(rule);
  }
}
BENCHMARK(BM_TypicalCompile);

// One message against 100 loaded rules; items/s = messages/s.
void BM_HundredRulesPerMessage(benchmark::State& state) {
  const std::vector<CompiledRule> rules = HundredRules();
  const nlohmann::json& envelope = Envelope();
  std::size_t outputs = 0;
  for (auto _ : state) {
    for (const CompiledRule& rule : rules) {
      auto out = rule.Evaluate(envelope, kContext);
      outputs += out.has_value() ? std::size_t{1} : std::size_t{0};
      benchmark::DoNotOptimize(out);
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["outputs_per_msg"] =
      static_cast<double>(outputs) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_HundredRulesPerMessage);

}  // namespace

BENCHMARK_MAIN();
