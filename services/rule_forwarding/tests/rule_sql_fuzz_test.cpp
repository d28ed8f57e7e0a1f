// Fuzz-style robustness: random token soup, random bytes, random well-formed expressions and
// random envelopes. Deterministic seeds; nothing may crash or throw, and every statement either
// compiles or yields a well-formed INVALID_ARGUMENT with its position.

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "iot/rule_forwarding/sql/rule_sql.h"
#include "rule_sql_test_util.h"

namespace iot::rule_forwarding::sql {
namespace {

using nlohmann::json;

class Fuzz : public ::testing::Test {
 protected:
  std::size_t Pick(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }
  bool Chance(int percent) { return static_cast<int>(Pick(100)) < percent; }

  json RandomJson(int depth) {
    switch (Pick(depth > 0 ? 9 : 7)) {
      case 0:
        return nullptr;
      case 1:
        return Chance(50);
      case 2:
        return static_cast<std::int64_t>(rng_()) >> Pick(64);
      case 3:
        return std::uniform_real_distribution<double>(-1e6, 1e6)(rng_);
      case 4:
        return std::array<const char*, 6>{
            "ON", "", "device.property", "p1_n1", "é世", "%_\\"}[Pick(6)];
      case 5:
        return rng_();  // unsigned, may exceed int64
      case 6:
        return std::array<double, 4>{0.0, -0.0, 1e308, 5e-324}[Pick(4)];
      case 7: {
        json array = json::array();
        for (std::size_t i = Pick(4); i > 0; --i) {
          array.push_back(RandomJson(depth - 1));
        }
        return array;
      }
      default: {
        json object = json::object();
        static constexpr std::array<const char*, 10> kKeys{
            "resource",   "notify_data", "header",      "body",      "services",
            "properties", "voltage",     "relay_state", "device_id", "a"};
        for (std::size_t i = Pick(5); i > 0; --i) {
          object[kKeys[Pick(kKeys.size())]] = RandomJson(depth - 1);
        }
        return object;
      }
    }
  }

  // A random envelope that often keeps the real shape so that paths resolve partially.
  json RandomEnvelope() {
    json envelope = testing::TypicalEnvelope();
    for (std::size_t i = Pick(4); i > 0; --i) {
      static constexpr std::array<const char*, 6> kPointers{
          "/resource",
          "/notify_data/header",
          "/notify_data/body/services/0/properties/voltage",
          "/notify_data/body/services/0/properties/relay_state",
          "/notify_data/body/services",
          "/notify_data"};
      const json::json_pointer pointer(kPointers[Pick(kPointers.size())]);
      if (envelope.contains(pointer)) {  // an earlier step may have replaced a parent
        envelope[pointer] = RandomJson(3);
      }
    }
    return Chance(5) ? RandomJson(4) : envelope;
  }

  std::string RandomExpr(int depth) {
    static constexpr std::array<const char*, 14> kLeaves{
        "resource",
        "notify_data.body.services[0].properties.voltage",
        "notify_data.body.services[0].properties.relay_state",
        "notify_data.header",
        "notify_data.body.services",
        "nope.x[3]",
        "1",
        "-2.5",
        "'ON'",
        "''",
        "null",
        "true",
        "9223372036854775807",
        "device_id()"};
    if (depth <= 0 || Chance(30)) {
      return kLeaves[Pick(kLeaves.size())];
    }
    static constexpr std::array<const char*, 16> kBinary{
        " + ",  " - ",   " * ",  " / ",    " % ",        " = ", " <> ", " < ",
        " >= ", " AND ", " OR ", " LIKE ", " NOT LIKE ", " > ", " <= ", " != "};
    static constexpr std::array<const char*, 14> kUnaryFunctions{
        "abs",       "round",     "floor",  "ceil",     "lower", "upper", "length",
        "to_number", "to_string", "concat", "coalesce", "topic", "NOT ",  "-"};
    const std::string a = RandomExpr(depth - 1);
    const std::string b = RandomExpr(depth - 1);
    switch (Pick(9)) {
      case 0:
      case 1:
        return "(" + a + kBinary[Pick(kBinary.size())] + b + ")";
      case 2: {
        const std::string f = kUnaryFunctions[Pick(kUnaryFunctions.size())];
        if (f == "NOT " || f == "-") {
          return "(" + f + a + ")";
        }
        return f + "(" + a + ")";
      }
      case 3:
        return "(" + a + (Chance(50) ? " IN (" : " NOT IN (") + b + ", " + RandomExpr(0) + "))";
      case 4:
        return "(" + a + (Chance(50) ? " IS NULL)" : " IS NOT NULL)");
      case 5:
        return "(" + a + " BETWEEN " + b + " AND " + RandomExpr(0) + ")";
      case 6:
        return "CASE WHEN " + a + " THEN " + b + " ELSE " + RandomExpr(0) + " END";
      case 7:
        return std::string(Chance(50) ? "substring(" : "round(") + a + ", " + b + ")";
      default:
        return "concat(" + a + ", " + b + ", " + RandomExpr(0) + ")";
    }
  }

  // Compiles; on success evaluates against a few envelopes; on failure checks the error shape.
  bool Exercise(const std::string& sql) {
    const auto rule = CompileRule(sql);
    if (!rule.ok()) {
      EXPECT_EQ(rule.status().code(), absl::StatusCode::kInvalidArgument);
      const auto error = SqlErrorOf(rule.status());
      EXPECT_TRUE(error.has_value());
      if (error) {
        EXPECT_LE(error->offset, sql.size());
        EXPECT_GE(error->line, 1);
        EXPECT_GE(error->column, 1);
        EXPECT_FALSE(error->message.empty());
        EXPECT_EQ(std::string(rule.status().message()), error->ToString());
      }
      return false;
    }
    for (int i = 0; i < 3; ++i) {
      const json envelope = i == 0 ? testing::TypicalEnvelope() : RandomEnvelope();
      const EvalContext ctx = i == 2 ? EvalContext{} : testing::TypicalContext();
      EXPECT_NO_THROW({
        const auto out = rule->Evaluate(envelope, ctx);
        EXPECT_EQ(out.has_value(), rule->Matches(envelope, ctx)) << sql;
        if (out) {
          (void)out->dump(-1, ' ', false, json::error_handler_t::replace);
        }
      }) << sql;
    }
    return true;
  }

  std::mt19937_64 rng_{20261126};
};

TEST_F(Fuzz, TokenSoup) {
  static constexpr std::array<const char*, 64> kTokens{"SELECT",
                                                       "FROM",
                                                       "WHERE",
                                                       "AS",
                                                       "AND",
                                                       "OR",
                                                       "NOT",
                                                       "IN",
                                                       "LIKE",
                                                       "IS",
                                                       "NULL",
                                                       "TRUE",
                                                       "FALSE",
                                                       "CASE",
                                                       "WHEN",
                                                       "THEN",
                                                       "ELSE",
                                                       "END",
                                                       "BETWEEN",
                                                       "*",
                                                       ",",
                                                       ".",
                                                       "(",
                                                       ")",
                                                       "[",
                                                       "]",
                                                       "+",
                                                       "-",
                                                       "/",
                                                       "%",
                                                       "=",
                                                       "!=",
                                                       "<>",
                                                       "<",
                                                       "<=",
                                                       ">",
                                                       ">=",
                                                       ";",
                                                       "a",
                                                       "b.c",
                                                       "d[0]",
                                                       "\"q-k\"",
                                                       "`x`",
                                                       "'s'",
                                                       "'it''s'",
                                                       "'%_'",
                                                       "'$oc/devices/+/#'",
                                                       "'#/a'",
                                                       "1",
                                                       "2.5",
                                                       "1e3",
                                                       "-0",
                                                       "abs(",
                                                       "round(",
                                                       "concat(",
                                                       "substring(",
                                                       "topic(",
                                                       "device_id()",
                                                       "timestamp()",
                                                       "lower(",
                                                       "'",
                                                       "\"",
                                                       "/*",
                                                       "--"};
  int compiled = 0;
  constexpr int kRuns = 5000;
  for (int run = 0; run < kRuns; ++run) {
    std::string sql = Chance(90) ? "SELECT " : "";
    for (std::size_t n = Pick(24); n > 0; --n) {
      sql += kTokens[Pick(kTokens.size())];
      if (Chance(80)) {
        sql += ' ';
      }
    }
    compiled += Exercise(sql) ? 1 : 0;
  }
  // Most soup is invalid; some must get through so that evaluation is exercised too.
  EXPECT_GT(compiled, 50);
  EXPECT_LT(compiled, kRuns);
}

TEST_F(Fuzz, RandomBytes) {
  constexpr int kRuns = 5000;
  for (int run = 0; run < kRuns; ++run) {
    std::string sql = Chance(50) ? "SELECT " : "";
    const std::size_t length = Pick(200);
    const bool printable = Chance(50);
    for (std::size_t i = 0; i < length; ++i) {
      sql += printable ? static_cast<char>(32 + Pick(95)) : static_cast<char>(Pick(256));
    }
    Exercise(sql);
  }
}

TEST_F(Fuzz, RandomWellFormedExpressions) {
  int compiled = 0;
  constexpr int kRuns = 4000;
  for (int run = 0; run < kRuns; ++run) {
    std::string sql = "SELECT " + RandomExpr(4) + " AS x";
    if (Chance(50)) {
      sql += ", " + RandomExpr(3) + " AS y";
    }
    if (Chance(70)) {
      sql += " WHERE " + RandomExpr(4);
    }
    compiled += Exercise(sql) ? 1 : 0;
  }
  // Random operands often mix types ('ON' + 1, WHEN 1), which the compiler rejects; enough must
  // compile for evaluation to be exercised on thousands of shapes.
  EXPECT_GT(compiled, kRuns / 10);
}

TEST_F(Fuzz, FixedRulesOnRandomEnvelopes) {
  const std::string p = "notify_data.body.services[0].properties.";
  const std::vector<std::string> rules = {
      "SELECT *",
      "SELECT " + p + "voltage, " + p + "relay_state, device_id() WHERE " + p +
          "voltage > 220 AND " + p + "relay_state = 'ON' AND resource LIKE 'device.%'",
      "SELECT round(" + p + "voltage * 1.5, 1) AS v, length(" + p +
          "relay_state) AS l, substring(resource, 2, 3) AS s, to_string(notify_data) AS t",
      "SELECT CASE " + p + "relay_state WHEN 'ON' THEN 1 ELSE 0 END AS on_, " + p +
          "voltage BETWEEN 1 AND 1000 AS ok, notify_data.body.services[0] IS NULL AS missing",
  };
  for (const std::string& sql : rules) {
    const auto rule = CompileRule(sql);
    ASSERT_TRUE(rule.ok()) << sql << ": " << rule.status();
    for (int run = 0; run < 1000; ++run) {
      const json envelope = RandomEnvelope();
      EXPECT_NO_THROW({
        const auto out = rule->Evaluate(envelope, testing::TypicalContext());
        EXPECT_EQ(out.has_value(), rule->Matches(envelope, testing::TypicalContext()));
      }) << sql
         << " on " << envelope.dump();
    }
  }
}

}  // namespace
}  // namespace iot::rule_forwarding::sql
