#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "iot/rule_forwarding/sql/program.h"
#include "iot/rule_forwarding/sql/rule_sql.h"
#include "rule_sql_test_util.h"

namespace iot::rule_forwarding::sql {
namespace {

using nlohmann::json;
using testing::Expr;
using testing::kReceiveMs;
using testing::kReportTopic;
using testing::TypicalContext;
using testing::TypicalEnvelope;
using testing::Where;

struct Case {
  std::string expr;
  json expected;
};

void ExpectAll(const std::vector<Case>& cases, const json& envelope = TypicalEnvelope()) {
  for (const Case& c : cases) {
    const json got = Expr(c.expr, envelope);
    EXPECT_EQ(got, c.expected) << c.expr << " gave " << got.dump();
    // Same kind of number too: 2 and 2.0 are equal JSON but must come out as the docs say.
    EXPECT_EQ(got.is_number_float(), c.expected.is_number_float())
        << c.expr << " gave " << got.dump();
    EXPECT_EQ(got.is_null(), c.expected.is_null()) << c.expr << " gave " << got.dump();
  }
}

const json kNull = nullptr;

TEST(RuleSqlEval, Paths) {
  ExpectAll({
      {"notify_data.body.services[0].properties.voltage", 229.5},
      {"notify_data.body.services[0].properties.relay_state", "ON"},
      {"resource", "device.property"},
      {"notify_data.header.device_id", "p1_n1"},
      {"notify_data.header", TypicalEnvelope()["notify_data"]["header"]},
      {"notify_data.body.services[0].service_id", "meter"},
      // Missing or wrongly shaped steps are NULL.
      {"nope", kNull},
      {"notify_data.nope.x", kNull},
      {"notify_data.body.services[5]", kNull},
      {"resource.x", kNull},
      {"notify_data.body.services.x", kNull},
      {"notify_data[0]", kNull},
      {"resource[0]", kNull},
  });
}

TEST(RuleSqlEval, QuotedAndKeywordKeys) {
  const json envelope = json::parse(R"({"a-b": {"c d": 1, "from": 2, "it's": 3, "x\"y": 4},
                                        "select": 5, "Resource": 6})");
  ExpectAll(
      {
          {R"("a-b"."c d")", 1},
          {"`a-b`.`c d`", 1},
          {"`a-b`.from", 2},
          {R"("a-b"."it's")", 3},
          {R"("a-b"."x""y")", 4},
          {"`a-b`.`x\"y`", 4},
          {R"("select")", 5},
          {"Resource", 6},  // keys are case-sensitive
          {"resource", kNull},
      },
      envelope);
}

TEST(RuleSqlEval, Literals) {
  ExpectAll({
      {"42", 42},
      {"-7", -7},
      {"3.25", 3.25},
      {"1e3", 1000.0},
      {"2.5E-1", 0.25},
      {"'it''s'", "it's"},
      {"''", ""},
      {"'héllo 世界'", "héllo 世界"},
      {"true", true},
      {"FALSE", false},
      {"null", kNull},
      {"-9223372036854775808", std::numeric_limits<std::int64_t>::min()},
      {"9223372036854775807", std::numeric_limits<std::int64_t>::max()},
      {"9223372036854775808", 9223372036854775808.0},
      {"+5", 5},
  });
}

TEST(RuleSqlEval, Arithmetic) {
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  ExpectAll({
      {"1 + 2", 3},
      {"7 / 2", 3.5},
      {"6 / 3", 2},
      {"-6 / 3", -2},
      {"7 % 3", 1},
      {"-7 % 3", -1},
      {"7.5 % 2", 1.5},
      {"1 / 0", kNull},
      {"1 % 0", kNull},
      {"1.5 / 0", kNull},
      {"1.5 % 0.0", kNull},
      {"2 * 3.5", 7.0},
      {"1 + 2 * 3", 7},
      {"(1 + 2) * 3", 9},
      {"10 - 4 - 3", 3},
      {"2 * 3 % 4", 2},
      {"-(2 + 3)", -5},
      {"- -2", 2},
      {"9223372036854775807 + 1", static_cast<double>(max) + 1},
      {"-9223372036854775808 - 1", -static_cast<double>(max) - 2},
      {"9223372036854775807 * 2", static_cast<double>(max) * 2},
      {"-9223372036854775808 / -1", 9223372036854775808.0},
      {"-9223372036854775808 % -1", 0},
      {"1e308 * 10", kNull},  // not finite
      {"null + 1", kNull},
      {"notify_data.body.services[0].properties.voltage * 2", 459.0},
      {"-notify_data.body.services[0].properties.voltage", -229.5},
      {"notify_data.body.services[0].properties.voltage / 0", kNull},
      {"resource + 1", kNull},  // a string at run time: NULL, not an error
      {"-resource", kNull},
      {"nope * 2", kNull},
  });
}

TEST(RuleSqlEval, Comparisons) {
  ExpectAll({
      {"1 = 1.0", true},
      {"1 == 1", true},
      {"1 < 1.5", true},
      {"2 <= 2", true},
      {"3 > 2.5", true},
      {"2 >= 3", false},
      {"1 != 2", true},
      {"1 <> 1", false},
      // Exact int64 against double: 2^53 + 1 is not representable as a double.
      {"9007199254740993 > 9007199254740992.0", true},
      {"9007199254740992.0 < 9007199254740993", true},
      {"9223372036854775807 < 9223372036854775808.0", true},
      {"-9223372036854775808 = -9223372036854775808.0", true},
      {"'a' < 'b'", true},
      {"'b' <= 'a'", false},
      {"'a' <> 'b'", true},
      {"'é' > 'z'", true},  // bytewise
      {"true = true", true},
      {"false < true", true},
      {"null = null", kNull},
      {"1 = null", kNull},
      {"notify_data.body.services[0].properties.voltage > 229", true},
      {"notify_data.body.services[0].properties.voltage = 229.5", true},
      {"notify_data.body.services[0].properties.relay_state = 'ON'", true},
      // Different types at run time compare as NULL, never as FALSE.
      {"notify_data.body.services[0].properties.relay_state = 1", kNull},
      {"notify_data.body.services[0].properties.relay_state != 1", kNull},
      {"resource > 5", kNull},
      // Objects and arrays: equality only.
      {"notify_data.header = notify_data.header", true},
      {"notify_data.header != notify_data.body", true},
      {"notify_data.header < notify_data.header", kNull},
      {"notify_data.body.services = notify_data.body.services", true},
      {"notify_data.header = 'x'", kNull},
  });
}

TEST(RuleSqlEval, ThreeValuedLogic) {
  // Literal operands fold at compile time; paths take the run-time path. Both must agree.
  const json envelope = json::parse(R"({"t": true, "f": false, "n": null, "s": "x"})");
  ExpectAll(
      {
          {"true AND true", true},
          {"true AND false", false},
          {"true AND null", kNull},
          {"false AND null", false},
          {"null AND false", false},
          {"true OR null", true},
          {"false OR null", kNull},
          {"false OR false", false},
          {"NOT null", kNull},
          {"NOT true", false},
          {"NOT NOT true", true},
          {"t AND t", true},
          {"t AND f", false},
          {"t AND n", kNull},
          {"f AND n", false},
          {"n AND f", false},
          {"t OR n", true},
          {"f OR n", kNull},
          {"n OR t", true},
          {"NOT n", kNull},
          {"NOT f", true},
          {"t AND t AND t AND f", false},
          {"f OR f OR n OR t", true},
          // Non-booleans are unknown.
          {"s AND t", kNull},
          {"NOT s", kNull},
          {"missing OR f", kNull},
          // Precedence: NOT > AND > OR.
          {"t OR f AND f", true},
          {"NOT f AND f", false},
          {"(t OR f) AND f", false},
      },
      envelope);
}

TEST(RuleSqlEval, In) {
  ExpectAll({
      {"'b' IN ('a', 'b')", true},
      {"'c' IN ('a', 'b')", false},
      {"'c' IN ('a', null)", kNull},
      {"'a' IN ('a', null)", true},
      {"'c' NOT IN ('a', 'b')", true},
      {"'a' NOT IN ('a', 'b')", false},
      {"'c' NOT IN ('a', null)", kNull},
      {"null IN (1, 2)", kNull},
      {"2 IN (1, 2.0)", true},
      {"notify_data.body.services[0].properties.relay_state IN ('ON', 'OFF')", true},
      {"notify_data.body.services[0].properties.relay_state NOT IN ('OFF')", true},
      {"resource IN (1, 2)", kNull},
      {"notify_data.header.product_id IN (notify_data.header.node_id, 'p1')", true},
      {"1 + 1 IN (2)", true},
  });
}

TEST(RuleSqlEval, Like) {
  const json envelope = json::parse(
      R"({"r": "device.property", "pct": "50%", "u": "a_b", "pat": "dev%", "bad": "x\\",
          "n": 5, "e": "héllo"})");
  ExpectAll(
      {
          {"r LIKE 'device.%'", true},
          {"r LIKE '%.property'", true},
          {"r LIKE '%ice.pro%'", true},
          {"r LIKE 'device.property'", true},
          {"r LIKE 'device'", false},
          {"r LIKE 'dev_ce%'", true},
          {"r LIKE 'dev_ce'", false},
          {"r LIKE '%'", true},
          {"'' LIKE '%'", true},
          {"'' LIKE '_'", false},
          {"e LIKE 'h_llo'", true},  // '_' is one code point, not one byte
          {"e LIKE '_____'", true},
          {"e LIKE '______'", false},
          {"pct LIKE '50\\%'", true},
          {"'500' LIKE '50\\%'", false},
          {"u LIKE 'a\\_b'", true},
          {"'axb' LIKE 'a\\_b'", false},
          {"'a\\b' LIKE 'a\\\\b'", true},
          {"'abcabc' LIKE '%b_a%'", true},
          {"'aaa' LIKE '%a%a%a%'", true},
          {"'aa' LIKE '%a%a%a%'", false},
          {"'mississippi' LIKE '%iss%ppi'", true},
          {"'mississippi' LIKE 'm%s_i%i'", true},
          {"r NOT LIKE 'device.%'", false},
          {"r NOT LIKE 'x%'", true},
          {"n LIKE '5'", kNull},
          {"missing LIKE '%'", kNull},
          // Patterns known only at run time.
          {"r LIKE pat", true},
          {"pct LIKE pat", false},
          {"r LIKE bad", kNull},
          {"r LIKE n", kNull},
          {"r NOT LIKE pat", false},
          {"r LIKE concat('dev', '%')", true},
      },
      envelope);
}

TEST(RuleSqlEval, LikeMatcher) {
  using internal::LikeMatch;
  EXPECT_EQ(LikeMatch("abc", "a%"), true);
  EXPECT_EQ(LikeMatch("abc", "%c"), true);
  EXPECT_EQ(LikeMatch("abc", "a_c"), true);
  EXPECT_EQ(LikeMatch("abc", "a\\"), std::nullopt);
  EXPECT_EQ(LikeMatch("", ""), true);
  EXPECT_EQ(LikeMatch("a", ""), false);
  EXPECT_EQ(LikeMatch("", "%%"), true);
  EXPECT_EQ(LikeMatch("ab", "%%b"), true);
  EXPECT_EQ(LikeMatch("\xff\xfe", "__"), true);  // invalid UTF-8 is matched bytewise, safely
  EXPECT_EQ(internal::CompileLike("ab%").kind, internal::LikePattern::Kind::kPrefix);
  EXPECT_EQ(internal::CompileLike("%ab").kind, internal::LikePattern::Kind::kSuffix);
  EXPECT_EQ(internal::CompileLike("%ab%").kind, internal::LikePattern::Kind::kContains);
  EXPECT_EQ(internal::CompileLike("%%").kind, internal::LikePattern::Kind::kAny);
  EXPECT_EQ(internal::CompileLike("a\\%b").kind, internal::LikePattern::Kind::kExact);
  EXPECT_EQ(internal::CompileLike("a\\%b").text, "a%b");
  EXPECT_EQ(internal::CompileLike("a%b").kind, internal::LikePattern::Kind::kGeneral);
  EXPECT_EQ(internal::CompileLike("a_").kind, internal::LikePattern::Kind::kGeneral);
}

TEST(RuleSqlEval, IsNullAndBetween) {
  ExpectAll({
      {"nope IS NULL", true},
      {"nope IS NOT NULL", false},
      {"resource IS NOT NULL", true},
      {"resource is null", false},
      {"notify_data.body.x IS NULL", true},
      {"null IS NULL", true},
      {"1 / 0 IS NULL", true},
      {"notify_data.body.services[0].properties.voltage BETWEEN 220 AND 240", true},
      {"notify_data.body.services[0].properties.voltage BETWEEN 230 AND 240", false},
      {"notify_data.body.services[0].properties.voltage NOT BETWEEN 230 AND 240", true},
      {"5 BETWEEN 5 AND 5", true},
      {"5 BETWEEN 1 AND null", kNull},
      {"0 BETWEEN 1 AND null", false},
      {"0 NOT BETWEEN 1 AND null", true},
      {"null BETWEEN 1 AND 2", kNull},
      {"'b' BETWEEN 'a' AND 'c'", true},
      {"resource BETWEEN 1 AND 2", kNull},
      {"1 BETWEEN 0 AND 2 AND true", true},  // BETWEEN's AND binds first
  });
}

TEST(RuleSqlEval, Case) {
  const std::string v = "notify_data.body.services[0].properties.voltage";
  const std::string relay = "notify_data.body.services[0].properties.relay_state";
  ExpectAll({
      {"CASE WHEN " + v + " > 230 THEN 'high' WHEN " + v + " > 220 THEN 'normal' ELSE 'low' END",
       "normal"},
      {"CASE WHEN " + v + " > 300 THEN 'high' END", kNull},
      {"CASE WHEN " + v + " > 300 THEN 'high' ELSE 'low' END", "low"},
      {"CASE " + relay + " WHEN 'ON' THEN 1 WHEN 'OFF' THEN 0 END", 1},
      {"CASE " + relay + " WHEN 'OFF' THEN 0 ELSE -1 END", -1},
      {"CASE nope WHEN null THEN 'null matched' ELSE 'no' END", "no"},
      {"CASE WHEN nope > 1 THEN 'a' WHEN true THEN 'b' END", "b"},
      {"case when true then 1 else 2 end", 1},
      {"CASE WHEN false THEN 1 END", kNull},
      {"CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END", "two"},
  });
}

TEST(RuleSqlEval, ContextFunctions) {
  ExpectAll({
      {"device_id()", "p1_n1"},
      {"product_id()", "p1"},
      {"tenant_id()", "tctx"},
      {"topic()", std::string(kReportTopic)},
      {"topic(1)", "$oc"},
      {"topic(2)", "devices"},
      {"topic(3)", "p1_n1"},
      {"topic(6)", "report"},
      {"topic(7)", kNull},
      {"topic(2.0)", "devices"},
      {"topic(nope)", kNull},
      {"topic(length(notify_data.body.services) - 1)", kNull},
      {"timestamp()", kReceiveMs},
      {"DEVICE_ID()", "p1_n1"},
  });
  // tenant_id falls back to the header; device_id to the topic; missing header is NULL.
  const json no_header = json::parse(R"({"resource": "device.property", "notify_data": {}})");
  EXPECT_EQ(Expr("tenant_id()", TypicalEnvelope(), EvalContext{kReportTopic, 0, ""}), "t1");
  EXPECT_EQ(Expr("device_id()", no_header), "p1_n1");
  EXPECT_EQ(Expr("product_id()", no_header), kNull);
  // The device's dialect from the header (the gateway names it), huawei when it has none.
  EXPECT_EQ(Expr("dialect()", no_header), "huawei");
  const json alink =
      json::parse(R"({"resource":"device.property","notify_data":{"header":{"dialect":"alink"}}})");
  EXPECT_EQ(Expr("dialect()", alink), "alink");
  EXPECT_EQ(Expr("dialect() = 'alink' AND topic() LIKE '/sys/%'", alink,
                 EvalContext{"/sys/pk/dn/thing/event/property/post", 0, ""}),
            true);
  EXPECT_EQ(Expr("tenant_id()", no_header, EvalContext{kReportTopic, 0, ""}), kNull);
  EXPECT_EQ(Expr("device_id()", no_header, EvalContext{"other/topic", 0, ""}), kNull);
  EXPECT_EQ(Expr("device_id()", no_header, EvalContext{"$oc/devices/", 0, ""}), kNull);
  EXPECT_EQ(Expr("device_id()", no_header, EvalContext{"$oc/devices/d9", 0, ""}), "d9");
  EXPECT_EQ(Expr("topic()", no_header, EvalContext{}), kNull);
  EXPECT_EQ(Expr("topic(1)", no_header, EvalContext{}), kNull);
  EXPECT_EQ(Expr("topic(2)", no_header, EvalContext{"a//c", 0, ""}), "");
  const json numeric_id = json::parse(R"({"notify_data": {"header": {"device_id": 7}}})");
  EXPECT_EQ(Expr("device_id()", numeric_id), "p1_n1");
}

TEST(RuleSqlEval, NumericFunctions) {
  ExpectAll({
      {"abs(-3)", 3},
      {"abs(3)", 3},
      {"abs(-2.5)", 2.5},
      {"abs(-9223372036854775808)", 9223372036854775808.0},
      {"abs(resource)", kNull},
      {"abs(null)", kNull},
      {"round(2.5)", 3},
      {"round(-2.5)", -3},
      {"round(2.4)", 2},
      {"round(7)", 7},
      {"round(2.3456, 2)", 2.35},
      {"round(1234, -2)", 1200},
      {"round(1250, -2)", 1300},
      {"round(1250.0, -2)", 1300},
      {"round(7, 1)", 7},
      {"round(1.5, 40)", 1.5},
      {"round(123.0, -400)", 0},
      {"round(1e300, 10)", 1e300},
      {"round(2.5, nope)", kNull},
      {"round(2.56, 0.5 + 0.5)", 2.6},
      {"round(resource)", kNull},
      {"floor(2.7)", 2},
      {"floor(-2.1)", -3},
      {"ceil(2.1)", 3},
      {"ceil(-2.9)", -2},
      {"floor(5)", 5},
      {"floor(1e300)", 1e300},
      {"ceil(resource)", kNull},
      {"round(notify_data.body.services[0].properties.voltage)", 230},
      {"floor(notify_data.body.services[0].properties.current)", 3},
  });
}

TEST(RuleSqlEval, StringFunctions) {
  ExpectAll({
      {"lower('AbC')", "abc"},
      {"upper('AbC é')", "ABC é"},
      {"lower('abc')", "abc"},
      {"lower(notify_data.body.services[0].properties.relay_state)", "on"},
      {"upper(resource)", "DEVICE.PROPERTY"},
      {"lower(notify_data.body.services[0].properties.voltage)", kNull},
      {"concat('a', 1, null, true, 2.5)", "a1true2.5"},
      {"concat(nope)", ""},
      {"concat(device_id(), '/', notify_data.body.services[0].service_id)", "p1_n1/meter"},
      {"concat(notify_data.header.node_id, notify_data.body.services[0].properties)",
       R"(n1{"current":3.2,"relay_state":"ON","voltage":229.5})"},
      {"startswith(resource, 'device.')", true},
      {"startswith(resource, 'x')", false},
      {"endswith(resource, '.property')", true},
      {"endswith(resource, notify_data.nope)", kNull},
      {"startswith(notify_data.body.services[0].properties.voltage, '2')", kNull},
      {"substring('hello', 2)", "ello"},
      {"substring('hello', 2, 3)", "ell"},
      {"substring('hello', 0, 2)", "h"},
      {"substring('hello', -5, 2)", ""},
      {"substring('hello', 10)", ""},
      {"substring('hello', 1, 100)", "hello"},
      {"substring('héllo', 2, 1)", "é"},
      {"substring('héllo', 3)", "llo"},
      {"substring('hello', 1, -1)", kNull},
      {"substring('hello', notify_data.body.services[0].properties.current)", kNull},
      {"substring('hello', 9223372036854775807, 9223372036854775807)", ""},
      {"substring('hello', -9223372036854775808, 9223372036854775807)", ""},
      {"substring(resource, 1, 6)", "device"},
      {"substring(nope, 1)", kNull},
      {"length('héllo')", 5},
      {"length('')", 0},
      {"length(notify_data.body.services)", 1},
      {"length(notify_data.header)", 4},
      {"length(notify_data.body.services[0].properties.voltage)", kNull},
      {"coalesce(nope, null, 'x')", "x"},
      {"coalesce(nope)", kNull},
      {"coalesce(notify_data.body.services[0].properties.voltage, 0)", 229.5},
      {"to_number('12')", 12},
      {"to_number(' 1.5 ')", 1.5},
      {"to_number('+3')", 3},
      {"to_number('-3e2')", -300.0},
      {"to_number('abc')", kNull},
      {"to_number('')", kNull},
      {"to_number('1e999')", kNull},
      {"to_number('nan')", kNull},
      {"to_number('12abc')", kNull},
      {"to_number(true)", 1},
      {"to_number(7.5)", 7.5},
      {"to_number(notify_data.header)", kNull},
      {"to_string(12)", "12"},
      {"to_string(2.5)", "2.5"},
      {"to_string(-9223372036854775808)", "-9223372036854775808"},
      {"to_string(true)", "true"},
      {"to_string('s')", "s"},
      {"to_string(null)", kNull},
      {"to_string(notify_data.header.node_id)", "n1"},
      {"to_string(notify_data.body.services[0].properties.voltage)", "229.5"},
      {"to_string(notify_data.body.services[0].properties)",
       R"({"current":3.2,"relay_state":"ON","voltage":229.5})"},
      {"Lower(UPPER('x'))", "x"},
  });
}

TEST(RuleSqlEval, SelectStarAndExtras) {
  const auto ctx = TypicalContext();
  auto all = CompileRule("SELECT *");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->selects_all());
  EXPECT_EQ(all->Evaluate(TypicalEnvelope(), ctx), TypicalEnvelope());

  auto extra = CompileRule("SELECT *, device_id() AS dev, 'x' AS resource");
  ASSERT_TRUE(extra.ok()) << extra.status();
  json expected = TypicalEnvelope();
  expected["dev"] = "p1_n1";
  expected["resource"] = "x";
  EXPECT_EQ(extra->Evaluate(TypicalEnvelope(), ctx), expected);
  EXPECT_EQ(extra->output_names(), (std::vector<std::string>{"dev", "resource"}));
  // A non-object envelope: `*` alone copies it; with extras only the extras remain.
  EXPECT_EQ(all->Evaluate(json::array({1, 2}), ctx), json::array({1, 2}));
  EXPECT_EQ(extra->Evaluate(json::array({1, 2}), ctx),
            json::parse(R"({"dev": "p1_n1", "resource": "x"})"));

  auto filtered = CompileRule("SELECT * WHERE resource = 'device.message'");
  ASSERT_TRUE(filtered.ok()) << filtered.status();
  EXPECT_EQ(filtered->Evaluate(TypicalEnvelope(), ctx), std::nullopt);
}

TEST(RuleSqlEval, OutputNames) {
  auto rule = CompileRule(
      "SELECT notify_data.body.services[0].properties.voltage, notify_data.body.services[0], "
      "device_id(), 1 + 2, upper(resource), timestamp() AS ts, \"event\", `event_time`");
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ(rule->output_names(),
            (std::vector<std::string>{"voltage", "services", "device_id", "expr_4", "expr_5", "ts",
                                      "event", "event_time"}));
  const auto out = rule->Evaluate(TypicalEnvelope(), TypicalContext());
  ASSERT_TRUE(out);
  EXPECT_EQ(*out, json::parse(R"({"voltage": 229.5,
      "services": {"service_id": "meter",
                   "properties": {"voltage": 229.5, "current": 3.2, "relay_state": "ON"},
                   "event_time": "20261126T174248Z"},
      "device_id": "p1_n1", "expr_4": 3, "expr_5": "DEVICE.PROPERTY", "ts": 1795714968000,
      "event": "report", "event_time": "20261126T174248Z"})"));
}

TEST(RuleSqlEval, SelectKeepsNumbersExact) {
  const json envelope = json::parse(R"({"u": 18446744073709551615, "i": -5, "f": 1.0})");
  auto rule = CompileRule("SELECT u, i, f, u + 0 AS u_plus");
  ASSERT_TRUE(rule.ok()) << rule.status();
  const auto out = rule->Evaluate(envelope, {});
  ASSERT_TRUE(out);
  EXPECT_TRUE((*out)["u"].is_number_unsigned());
  EXPECT_EQ((*out)["u"].get<std::uint64_t>(), std::numeric_limits<std::uint64_t>::max());
  EXPECT_TRUE((*out)["i"].is_number_integer());
  EXPECT_TRUE((*out)["f"].is_number_float());
  EXPECT_TRUE((*out)["u_plus"].is_number_float());
  EXPECT_TRUE(Where("u > 9223372036854775807", envelope));
}

TEST(RuleSqlEval, FromTopicFilters) {
  const json& env = TypicalEnvelope();
  auto rule = CompileRule("SELECT 1 AS one FROM '$oc/devices/+/sys/properties/report'");
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_TRUE(rule->Evaluate(env, TypicalContext()));
  EXPECT_FALSE(rule->Evaluate(env, EvalContext{"$oc/devices/p1_n1/sys/events/up", 0, ""}));
  EXPECT_FALSE(rule->Matches(env, EvalContext{"$oc/devices/p1_n1/sys/events/up", 0, ""}));
  EXPECT_FALSE(rule->Matches(env, EvalContext{}));
  EXPECT_EQ(rule->topic_filters(),
            (std::vector<std::string>{"$oc/devices/+/sys/properties/report"}));

  auto several = CompileRule("SELECT 1 AS one FROM 'a/b', '$oc/devices/#' WHERE true");
  ASSERT_TRUE(several.ok()) << several.status();
  EXPECT_TRUE(several->MatchesTopic("a/b"));
  EXPECT_TRUE(several->MatchesTopic(kReportTopic));
  EXPECT_FALSE(several->MatchesTopic("a/c"));

  // As in MQTT, a leading wildcard does not match `$` topics.
  auto any = CompileRule("SELECT 1 AS one FROM '#'");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_FALSE(any->MatchesTopic(kReportTopic));
  EXPECT_TRUE(any->MatchesTopic("a/b"));

  auto none = CompileRule("SELECT 1 AS one");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->MatchesTopic(""));
  EXPECT_TRUE(none->Matches(env, EvalContext{}));
  EXPECT_TRUE(none->topic_filters().empty());

  auto quoted = CompileRule("SELECT 1 AS one FROM 'it''s/+'");
  ASSERT_TRUE(quoted.ok()) << quoted.status();
  EXPECT_TRUE(quoted->MatchesTopic("it's/x"));
}

TEST(RuleSqlEval, WherePassesOnlyWhenTrue) {
  EXPECT_TRUE(Where("true"));
  EXPECT_FALSE(Where("false"));
  EXPECT_FALSE(Where("null"));
  EXPECT_FALSE(Where("nope = 1"));
  EXPECT_TRUE(Where("nope IS NULL"));
  EXPECT_FALSE(Where("NOT (nope = 1)"));  // NOT NULL is NULL
  EXPECT_FALSE(Where("resource"));        // a string is not TRUE
  EXPECT_TRUE(
      Where("resource = 'device.property' AND "
            "notify_data.body.services[0].properties.voltage > 220 AND "
            "notify_data.body.services[0].properties.relay_state = 'ON'"));
  EXPECT_FALSE(
      Where("resource = 'device.property' AND "
            "notify_data.body.services[0].properties.voltage > 230"));
}

TEST(RuleSqlEval, WrongEnvelopesNeverThrow) {
  const std::vector<json> envelopes = {
      json(),
      json::object(),
      json::array(),
      json("string"),
      json(42),
      json::parse(R"({"notify_data": []})"),
      json::parse(R"({"notify_data": {"header": "x", "body": {"services": {"0": 1}}}})"),
      json::parse(R"({"notify_data": {"body": {"services": [null, 1, "x", []]}}})"),
      json::parse(R"({"notify_data": {"body": {"services": [{"properties": {
                      "voltage": "229.5", "current": null, "relay_state": 1}}]}}})"),
      json::parse(R"({"notify_data": {"body": {"services": [{"properties": {
                      "voltage": [229.5], "current": {"a": 1}, "relay_state": true}}]}}})"),
      json::parse(R"({"resource": 1, "notify_data": {"header": {"device_id": null,
                      "product_id": 5, "tenant_id": []}}})"),
      json::parse(R"({"resource": "device.property", "notify_data": {"body": {"services": [{
                      "properties": {"voltage": 1e308, "current": -1e308,
                      "relay_state": 18446744073709551615}}]}}})"),
      json::binary({1, 2, 3}),
      json(std::numeric_limits<double>::quiet_NaN()),
  };
  const std::string p = "notify_data.body.services[0].properties.";
  const std::vector<std::string> rules = {
      "SELECT *",
      "SELECT * , device_id() AS d",
      "SELECT " + p + "voltage, " + p + "current, " + p + "relay_state WHERE " + p +
          "voltage > 200 OR " + p + "current < 1 OR " + p + "relay_state = 'ON' OR true",
      "SELECT " + p + "voltage * 2 + " + p + "current / " + p + "relay_state AS x, abs(" + p +
          "voltage) AS a, round(" + p + "current, 1) AS r, floor(" + p + "voltage) AS f",
      "SELECT lower(" + p + "relay_state) AS l, concat(" + p + "voltage, " + p +
          "relay_state) AS c, substring(" + p + "relay_state, 1, 1) AS s, length(" + p +
          "voltage) AS n, to_number(" + p + "voltage) AS tn, to_string(" + p + "current) AS ts",
      "SELECT device_id(), product_id(), tenant_id(), topic(), topic(2), timestamp()",
      "SELECT 1 AS one WHERE " + p + "relay_state LIKE 'O%' OR " + p +
          "voltage IN (1, 'a', null) OR " + p + "voltage BETWEEN 1 AND 2 OR " + p +
          "current IS NULL",
      "SELECT CASE WHEN " + p + "voltage > 1 THEN " + p + "current ELSE " + p +
          "relay_state END AS c, coalesce(" + p + "voltage, " + p + "current) AS co",
      "SELECT notify_data = notify_data AS e, notify_data.header < 1 AS l, resource AS r",
  };
  for (const std::string& sql : rules) {
    auto rule = CompileRule(sql);
    ASSERT_TRUE(rule.ok()) << sql << ": " << rule.status();
    for (const json& envelope : envelopes) {
      for (const EvalContext& ctx : {TypicalContext(), EvalContext{}, EvalContext{"/", -1, "x"}}) {
        EXPECT_NO_THROW({
          const auto out = rule->Evaluate(envelope, ctx);
          if (out && !rule->selects_all()) {
            EXPECT_TRUE(out->is_object());
            // Every output must be serialisable.
            EXPECT_FALSE(out->dump().empty());
          }
          (void)rule->Matches(envelope, ctx);
        }) << sql
           << " on " << envelope.dump(-1, ' ', false, json::error_handler_t::replace);
      }
    }
  }
}

TEST(RuleSqlEval, WronglyTypedFieldsYieldNullNotMatches) {
  const json stringly = json::parse(R"({"notify_data": {"body": {"services": [{"properties": {
      "voltage": "229.5", "relay_state": 1}}]}}})");
  const std::string p = "notify_data.body.services[0].properties.";
  EXPECT_FALSE(Where(p + "voltage > 200", stringly));
  EXPECT_FALSE(Where(p + "voltage <= 200", stringly));
  EXPECT_TRUE(Where("to_number(" + p + "voltage) > 200", stringly));
  EXPECT_FALSE(Where(p + "relay_state = 'ON'", stringly));
  EXPECT_FALSE(Where(p + "relay_state != 'ON'", stringly));
  EXPECT_EQ(Expr(p + "voltage + 1", stringly), kNull);
}

TEST(RuleSqlEval, RulesAreSharedAndReusable) {
  auto rule = CompileRule("SELECT concat(device_id(), '-', topic(6)) AS k");
  ASSERT_TRUE(rule.ok());
  const CompiledRule copy = *rule;
  EXPECT_EQ(copy.sql(), rule->sql());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(copy.Evaluate(TypicalEnvelope(), TypicalContext()),
              json::parse(R"({"k": "p1_n1-report"})"));
  }
}

}  // namespace
}  // namespace iot::rule_forwarding::sql
