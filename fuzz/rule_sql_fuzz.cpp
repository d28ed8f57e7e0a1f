// Rule SQL (rule-forwarding's CreateRule / UpdateRule): compile a statement, then evaluate it
// against an envelope taken from the same input. Input: SQL '\0' envelope JSON (a fixed IoTDA
// envelope when there is none or it does not parse). Errors must carry their position.
#include <nlohmann/json.hpp>
#include <string>

#include "fuzz_input.h"
#include "iot/rule_forwarding/sql/rule_sql.h"

namespace sql = iot::rule_forwarding::sql;
using iot::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::json kEnvelope = nlohmann::json::parse(R"({
    "resource": "device.property", "event": "report", "event_time": "20261126T200000Z",
    "notify_data": {"header": {"device_id": "p1_n1", "product_id": "p1", "node_id": "n1",
                               "tenant_id": "t1"},
                    "body": {"services": [{"service_id": "meter",
                                           "properties": {"voltage": 231.5, "state": "ON",
                                                          "tags": ["a", "b"], "n": 7}}]}}})");
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view statement = input.substr(0, nul);
  nlohmann::json envelope = kEnvelope;
  if (nul != std::string_view::npos) {
    auto parsed = nlohmann::json::parse(input.substr(nul + 1), nullptr, false);
    if (!parsed.is_discarded()) {
      envelope = std::move(parsed);
    }
  }
  auto compiled = sql::CompileRule(statement);
  if (!compiled.ok()) {
    Require(compiled.status().code() == absl::StatusCode::kInvalidArgument);
    const auto error = sql::SqlErrorOf(compiled.status());
    Require(error.has_value() && error->offset <= statement.size());
    return 0;
  }
  const sql::EvalContext context{
      .topic = "$oc/devices/p1_n1/sys/properties/report", .receive_time_ms = 1, .tenant_id = ""};
  const bool matches = compiled->Matches(envelope, context);
  const auto output = compiled->Evaluate(envelope, context);
  Require(matches == output.has_value());
  if (output) {
    (void)output->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
