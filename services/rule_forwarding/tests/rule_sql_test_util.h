#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "iot/rule_forwarding/sql/rule_sql.h"

namespace iot::rule_forwarding::sql::testing {

/// The IoTDA forwarding envelope of a property report, as in the issue.
inline const nlohmann::json& TypicalEnvelope() {
  static const nlohmann::json kEnvelope = nlohmann::json::parse(R"({
    "resource": "device.property",
    "event": "report",
    "event_time": "20261126T174248Z",
    "notify_data": {
      "header": {"device_id": "p1_n1", "product_id": "p1", "node_id": "n1", "tenant_id": "t1"},
      "body": {"services": [{"service_id": "meter",
                             "properties": {"voltage": 229.5, "current": 3.2, "relay_state": "ON"},
                             "event_time": "20261126T174248Z"}]}
    }
  })");
  return kEnvelope;
}

inline constexpr std::string_view kReportTopic = "$oc/devices/p1_n1/sys/properties/report";
inline constexpr std::int64_t kReceiveMs = 1795714968000;

inline EvalContext TypicalContext() { return EvalContext{kReportTopic, kReceiveMs, "tctx"}; }

/// Marker returned by the helpers below when the statement did not compile.
inline nlohmann::json CompileFailed(const absl::Status& status) {
  return {{"compile_failed", std::string(status.message())}};
}

/// Compiles `SELECT <expr> AS v`, evaluates it and returns v; a string "no output" when the
/// rule produced none.
inline nlohmann::json Expr(std::string_view expr,
                           const nlohmann::json& envelope = TypicalEnvelope(),
                           const EvalContext& ctx = TypicalContext()) {
  auto rule = CompileRule(std::string("SELECT ") + std::string(expr) + " AS v");
  if (!rule.ok()) {
    ADD_FAILURE() << expr << ": " << rule.status();
    return CompileFailed(rule.status());
  }
  auto out = rule->Evaluate(envelope, ctx);
  if (!out) {
    return "no output";
  }
  return (*out)["v"];
}

/// Compiles `SELECT 1 AS one WHERE <condition>` and returns Matches (and checks that Evaluate
/// agrees).
inline bool Where(std::string_view condition, const nlohmann::json& envelope = TypicalEnvelope(),
                  const EvalContext& ctx = TypicalContext()) {
  auto rule = CompileRule(std::string("SELECT 1 AS one WHERE ") + std::string(condition));
  if (!rule.ok()) {
    ADD_FAILURE() << condition << ": " << rule.status();
    return false;
  }
  const bool matches = rule->Matches(envelope, ctx);
  EXPECT_EQ(matches, rule->Evaluate(envelope, ctx).has_value()) << condition;
  return matches;
}

}  // namespace iot::rule_forwarding::sql::testing
