#include "iot/thing_model/validator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <new>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "iot/common/status.h"
#include "iot/thing_model/product_model.h"

// Counts heap allocations of the calling thread while `counting` is set. GCC cannot see that the
// replaced operator new below returns malloc memory, hence the pragma (file-wide: the warning
// fires where library templates inline `delete`).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
thread_local bool counting = false;
thread_local std::size_t allocations = 0;
}  // namespace

// Every form is replaced so that all of them allocate with malloc (sanitizers check pairing).
void* CountedAlloc(std::size_t size) noexcept {
  if (counting) {
    ++allocations;
  }
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new(std::size_t size) {
  if (void* p = CountedAlloc(size)) {
    return p;
  }
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new(std::size_t size, const std::nothrow_t& /*tag*/) noexcept {
  return CountedAlloc(size);
}
void* operator new[](std::size_t size, const std::nothrow_t& /*tag*/) noexcept {
  return CountedAlloc(size);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t /*size*/) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t /*size*/) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t& /*tag*/) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t& /*tag*/) noexcept { std::free(p); }

namespace iot::thing_model {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// IOT_FUZZ_ITERATIONS raises the mutation count for a longer run (e.g. under sanitizers).
int FuzzIterations(int fallback) {
  const char* value = std::getenv("IOT_FUZZ_ITERATIONS");
  return value != nullptr ? std::atoi(value) : fallback;
}

std::string ReadTestdata(const std::string& name) {
  std::ifstream in(std::string(IOT_THING_MODEL_TESTDATA) + "/" + name);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

constexpr const char* kValidReport = R"({"services":[{"service_id":"meter","properties":{
  "voltage": 220.5, "current": 3, "total_energy": 12345.75, "relay_state": "ON",
  "report_interval": 60, "firmware": "v1.2.3", "installed_at": "2026-11-26T17:42:48+08:00",
  "location": {"lat": 31.2, "lng": 121.5, "name": "basement"}, "tags": ["a", "b" ],
  "online": true, "serial": 9876543210123},
  "event_time": "20261126T174248Z"}]})";

class ValidatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto parsed = ParseProductModel(ReadTestdata("smart_meter.json"));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    model_ = new std::shared_ptr<const CompiledModel>(parsed->model);
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  Validator validator() const { return Validator(*model_); }

  // A report of the meter service with `properties` (JSON object text).
  static std::string Report(const std::string& properties) {
    return R"({"services":[{"service_id":"meter","properties":)" + properties + "}]}";
  }

  // Validates a one-property report and returns its single error (failing if not exactly one).
  ValidationError OnlyError(const std::string& properties) const {
    const std::string text = Report(properties);
    ReportResult result = validator().ValidateReport(text);
    EXPECT_EQ(result.errors.size(), 1U) << properties;
    EXPECT_TRUE(result.properties.empty()) << properties;
    return result.errors.empty() ? ValidationError{} : result.errors[0];
  }

  static std::shared_ptr<const CompiledModel>* model_;
};

std::shared_ptr<const CompiledModel>* ValidatorTest::model_ = nullptr;

TEST_F(ValidatorTest, AcceptsAValidReportWithEveryDataType) {
  const std::string text = kValidReport;
  ReportResult result = validator().ValidateReport(text);
  ASSERT_TRUE(result.ok()) << result.errors[0].ToString();
  ASSERT_EQ(result.services.size(), 1U);
  const ReportedService& service = result.services[0];
  EXPECT_EQ(service.service_id, "meter");
  EXPECT_EQ(service.event_time, "20261126T174248Z");
  EXPECT_EQ(service.index, 0U);
  ASSERT_NE(service.spec, nullptr);
  auto properties = result.PropertiesOf(service);
  ASSERT_EQ(properties.size(), 11U);

  std::map<std::string, std::string> values;
  for (const ReportedProperty& property : properties) {
    // Views into the report text, exactly as written.
    EXPECT_GE(property.value.data(), text.data());
    EXPECT_LE(property.value.data() + property.value.size(), text.data() + text.size());
    EXPECT_EQ(property.spec->name, property.name);
    values[std::string(property.name)] = std::string(property.value);
  }
  EXPECT_EQ(values["voltage"], "220.5");
  EXPECT_EQ(values["current"], "3");
  EXPECT_EQ(values["relay_state"], "\"ON\"");
  EXPECT_EQ(values["installed_at"], "\"2026-11-26T17:42:48+08:00\"");
  EXPECT_EQ(values["location"], R"({"lat": 31.2, "lng": 121.5, "name": "basement"})");
  EXPECT_EQ(values["tags"], R"(["a", "b" ])");
  EXPECT_EQ(values["online"], "true");
  EXPECT_EQ(values["serial"], "9876543210123");
  for (const auto& [name, value] : values) {
    EXPECT_FALSE(json::parse(value, nullptr, false).is_discarded()) << name;
  }
}

TEST_F(ValidatorTest, DoesNotAllocateOnAValidReportOnceWarm) {
  const Validator v = validator();
  const std::string text = kValidReport;
  ReportResult result;
  v.ValidateReport(text, result);
  ASSERT_TRUE(result.ok());
  allocations = 0;
  counting = true;
  for (int k = 0; k < 100; ++k) {
    v.ValidateReport(text, result);
  }
  counting = false;
  EXPECT_EQ(allocations, 0U);
  EXPECT_EQ(result.properties.size(), 11U);
}

TEST_F(ValidatorTest, ReusesTheResult) {
  ReportResult result;
  const std::string bad = Report(R"({"voltage": "x"})");
  validator().ValidateReport(bad, result);
  EXPECT_EQ(result.errors.size(), 1U);
  validator().ValidateReport(kValidReport, result);
  EXPECT_TRUE(result.ok());
  EXPECT_EQ(result.properties.size(), 11U);
  EXPECT_EQ(result.services.size(), 1U);
}

struct BadValue {
  const char* properties;
  ErrorKind kind;
  const char* path;
  const char* message;
};

std::ostream& operator<<(std::ostream& out, const BadValue& c) { return out << c.properties; }

class BadValueTest : public ValidatorTest, public ::testing::WithParamInterface<BadValue> {};

TEST_P(BadValueTest, IsRejectedWithItsKindAndPath) {
  const BadValue& c = GetParam();
  const ValidationError error = OnlyError(c.properties);
  EXPECT_EQ(error.kind, c.kind) << error.ToString();
  EXPECT_EQ(error.path, c.path);
  EXPECT_THAT(error.message, HasSubstr(c.message));
}

constexpr auto kWrongType = ErrorKind::kWrongType;

INSTANTIATE_TEST_SUITE_P(
    Reports, BadValueTest,
    ::testing::Values(
        BadValue{R"({"humidity": 3})", ErrorKind::kUnknownProperty,
                 "services[0].properties.humidity",
                 "unknown property: service 'meter' has no property 'humidity'"},
        // int
        BadValue{R"({"report_interval": "60"})", kWrongType,
                 "services[0].properties.report_interval", "expected int, got string"},
        BadValue{R"({"report_interval": 1.5})", kWrongType,
                 "services[0].properties.report_interval", "1.5 (not an integer)"},
        BadValue{R"({"report_interval": 3000000000})", kWrongType,
                 "services[0].properties.report_interval", "beyond 32-bit integer range"},
        BadValue{R"({"report_interval": 0})", ErrorKind::kOutOfRange,
                 "services[0].properties.report_interval", "out of range: 0 < min 1"},
        BadValue{R"({"report_interval": 3601})", ErrorKind::kOutOfRange,
                 "services[0].properties.report_interval", "out of range: 3601 > max 3600"},
        BadValue{R"({"report_interval": true})", kWrongType,
                 "services[0].properties.report_interval", "expected int, got boolean"},
        BadValue{R"({"report_interval": null})", kWrongType,
                 "services[0].properties.report_interval", "expected int, got null"},
        // long
        BadValue{R"({"serial": 9223372036854775808})", kWrongType, "services[0].properties.serial",
                 "beyond 64-bit integer range"},
        BadValue{R"({"serial": 123456789012345678901234567890})", kWrongType,
                 "services[0].properties.serial", "beyond 64-bit integer range"},
        BadValue{R"({"total_energy": 123456789012345678901234567890})", ErrorKind::kOutOfRange,
                 "services[0].properties.total_energy",
                 "out of range: 123456789012345678901234567890 > max 99999999.99"},
        BadValue{R"({"serial": -1})", ErrorKind::kOutOfRange, "services[0].properties.serial",
                 "out of range: -1 < min 0"},
        BadValue{R"({"serial": [1]})", kWrongType, "services[0].properties.serial",
                 "expected long, got array"},
        // decimal
        BadValue{R"({"voltage": "220"})", kWrongType, "services[0].properties.voltage",
                 "expected decimal, got string"},
        BadValue{R"({"voltage": 500.01})", ErrorKind::kOutOfRange, "services[0].properties.voltage",
                 "out of range: 500.01 > max 500"},
        BadValue{R"({"voltage": -0.1})", ErrorKind::kOutOfRange, "services[0].properties.voltage",
                 "out of range: -0.1 < min 0"},
        BadValue{R"({"voltage": 1e400})", kWrongType, "services[0].properties.voltage",
                 "beyond the range of a double"},
        // string
        BadValue{R"({"firmware": "123456789012345678901234567890123"})", ErrorKind::kTooLong,
                 "services[0].properties.firmware", "too long: 33 characters > max_length 32"},
        BadValue{R"({"firmware": 12})", kWrongType, "services[0].properties.firmware",
                 "expected string, got number"},
        // enum
        BadValue{R"({"relay_state": "BLINK"})", ErrorKind::kNotInEnum,
                 "services[0].properties.relay_state",
                 "not in enum: 'BLINK' is not one of ON, OFF"},
        BadValue{R"({"relay_state": 1})", kWrongType, "services[0].properties.relay_state",
                 "expected enum, got number"},
        // DateTime
        BadValue{R"({"installed_at": "yesterday"})", kWrongType,
                 "services[0].properties.installed_at", "expected DateTime"},
        BadValue{R"({"installed_at": "20261326T174248Z"})", kWrongType,
                 "services[0].properties.installed_at", "expected DateTime"},
        BadValue{R"({"installed_at": 20261126})", kWrongType, "services[0].properties.installed_at",
                 "expected DateTime, got number"},
        // jsonObject
        BadValue{R"({"location": [1, 2]})", kWrongType, "services[0].properties.location",
                 "expected jsonObject, got array"},
        BadValue{R"({"location": "here"})", kWrongType, "services[0].properties.location",
                 "expected jsonObject, got string"},
        // string list
        BadValue{R"({"tags": "a"})", kWrongType, "services[0].properties.tags",
                 "expected string list, got string"},
        BadValue{R"({"tags": ["a", 2, "c"]})", kWrongType, "services[0].properties.tags[1]",
                 "expected string (element of string list), got number"},
        BadValue{R"({"tags": ["a", "0123456789abcdefX"]})", ErrorKind::kTooLong,
                 "services[0].properties.tags[1]", "too long: 17 characters > max_length 16"},
        // boolean: JSON booleans only
        BadValue{R"({"online": 1})", kWrongType, "services[0].properties.online",
                 "expected boolean, got number"},
        BadValue{R"({"online": "true"})", kWrongType, "services[0].properties.online",
                 "expected boolean, got string"}));

TEST_F(ValidatorTest, KeepsTheFirstOfADuplicatedProperty) {
  const std::string text = Report(R"({"online": true, "online": false})");
  ReportResult result = validator().ValidateReport(text);
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kDuplicate);
  EXPECT_EQ(result.errors[0].path, "services[0].properties.online");
  ASSERT_EQ(result.properties.size(), 1U);
  EXPECT_EQ(result.properties[0].value, "true");
  // Two entries of one service (a batch with event times) are not duplicates.
  result = validator().ValidateReport(
      R"({"services":[{"service_id":"meter","properties":{"online":true}},)"
      R"({"service_id":"meter","properties":{"online":false}}]})");
  EXPECT_TRUE(result.ok());
  EXPECT_EQ(result.properties.size(), 2U);
}

TEST_F(ValidatorTest, AcceptsEdgeValues) {
  for (const char* properties :
       {R"({"report_interval": 1})", R"({"report_interval": 3600})", R"({"report_interval": 60.0})",
        R"({"report_interval": 6e1})", R"({"serial": 9223372036854775807})", R"({"voltage": 0})",
        R"({"voltage": 500})", R"({"total_energy": 1.5e-400})", R"({"firmware": ""})",
        R"({"firmware": "固件版本一二三四五六七八九十一二三四五六七八九十一二三四五六七八"})",
        R"({"tags": []})", R"({"tags": [ ]})", R"({"location": {}})", R"({"online": false})",
        R"({"installed_at": "20261126T174248Z"})", R"({"installed_at": "2024-02-29T00:00:00Z"})",
        R"({"installed_at": "2026-11-26T17:42:48.123456Z"})", R"({})"}) {
    const std::string text = Report(properties);
    ReportResult result = validator().ValidateReport(text);
    EXPECT_TRUE(result.ok()) << properties << ": " << result.errors[0].ToString();
  }
}

TEST_F(ValidatorTest, PassesTheValidPartOfAMixedReport) {
  const std::string text = R"({"services":[
    {"service_id":"meter","properties":{"voltage":230,"current":"high","relay_state":"OFF",
     "humidity":5,"report_interval":99999},"event_time":"20261126T174248Z"},
    {"service_id":"water","properties":{"flow":1}},
    {"properties":{"online":true},"service_id":"meter","event_time":"not a time"}]})";
  ReportResult result = validator().ValidateReport(text);
  ASSERT_EQ(result.services.size(), 2U);
  ASSERT_EQ(result.properties.size(), 3U);
  auto first = result.PropertiesOf(result.services[0]);
  ASSERT_EQ(first.size(), 2U);
  EXPECT_EQ(first[0].name, "voltage");
  EXPECT_EQ(first[0].value, "230");
  EXPECT_EQ(first[1].name, "relay_state");
  EXPECT_EQ(first[1].value, "\"OFF\"");
  // Properties before service_id are still validated.
  EXPECT_EQ(result.services[1].index, 2U);
  EXPECT_EQ(result.services[1].event_time, "");
  auto third = result.PropertiesOf(result.services[1]);
  ASSERT_EQ(third.size(), 1U);
  EXPECT_EQ(third[0].name, "online");

  std::vector<std::string> errors;
  for (const auto& error : result.errors) {
    errors.push_back(error.path + " [" + std::string(ErrorKindName(error.kind)) + "]");
  }
  EXPECT_THAT(errors, ::testing::UnorderedElementsAre(
                          "services[0].properties.current [wrong type]",
                          "services[0].properties.humidity [unknown property]",
                          "services[0].properties.report_interval [out of range]",
                          "services[1].service_id [unknown service]",
                          "services[2].event_time [wrong type]"));
}

TEST_F(ValidatorTest, ChecksRequiredPropertiesOnlyWhenAsked) {
  const std::string text = Report(R"({"online": true})");
  EXPECT_TRUE(validator().ValidateReport(text).ok());
  ReportResult result = validator().ValidateReport(text, ReportOptions{.check_required = true});
  ASSERT_EQ(result.errors.size(), 2U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kMissingRequired);
  EXPECT_EQ(result.errors[0].path, "services[0].properties.voltage");
  EXPECT_EQ(result.errors[1].path, "services[0].properties.current");
  EXPECT_EQ(result.properties.size(), 1U);  // online still passes
  // Present but invalid is not "missing".
  const std::string invalid = Report(R"({"voltage": -1, "current": 1})");
  result = validator().ValidateReport(invalid, ReportOptions{.check_required = true});
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kOutOfRange);
}

TEST_F(ValidatorTest, ReadsEscapedNames) {
  ReportResult result = validator().ValidateReport(
      R"({"services":[{"service_id":"m\u0065ter","properties":{"volt\u0061ge":1}}]})");
  ASSERT_TRUE(result.ok()) << result.errors[0].ToString();
  ASSERT_EQ(result.properties.size(), 1U);
  EXPECT_EQ(result.properties[0].name, "voltage");
  EXPECT_EQ(result.services[0].service_id, "meter");
}

TEST_F(ValidatorTest, RejectsMalformedReportsWhole) {
  for (const char* text :
       {"", " ", "{", "}", "nope",
        R"({"services":[{"service_id":"meter","properties":{"voltage":1})",
        R"({"services":[{"service_id":"meter","properties":{"voltage":1}}]})"
        "}",
        R"({"services":[{"service_id":"meter","properties":{"voltage":1}}]} trailing)",
        R"({"services":[{"service_id":"meter","properties":{"voltage":-}}]})",
        R"({"services":[{"service_id":"meter","properties":{"voltage":1,}}]})",
        R"({"services":[{"service_id":"meter","properties":{"online":tru}}]})",
        R"({"services":[{"service_id":"meter","properties":{"firmware":"\x"}}]})",
        R"({"services":[{"service_id":"meter" "properties":{}}]})",
        "{\"services\":[{\"service_id\":\"meter\",\"properties\":{\"firmware\":\"\xff\"}}]}"}) {
    ReportResult result = validator().ValidateReport(text);
    ASSERT_EQ(result.errors.size(), 1U) << text;
    EXPECT_EQ(result.errors[0].kind, ErrorKind::kMalformed) << text;
    EXPECT_EQ(result.errors[0].path, "") << text;
    EXPECT_TRUE(result.services.empty()) << text;
    EXPECT_TRUE(result.properties.empty()) << text;
  }
}

TEST_F(ValidatorTest, RejectsReportsOfTheWrongShape) {
  const std::pair<const char*, const char*> cases[] = {
      {"[1,2]", ""},
      {"42", ""},
      {R"({"devices":[]})", "services"},
      {R"({"services":{}})", "services"},
      {R"({"services":[5]})", "services[0]"},
      {R"({"services":[{"properties":{}}]})", "services[0].service_id"},
      {R"({"services":[{"service_id":7,"properties":{}}]})", "services[0].service_id"},
      {R"({"services":[{"service_id":"meter"}]})", "services[0].properties"},
      {R"({"services":[{"service_id":"meter","properties":[]}]})", "services[0].properties"},
      {R"({"services":[{"service_id":"meter","properties":{},"event_time":5}]})",
       "services[0].event_time"},
  };
  for (const auto& [text, path] : cases) {
    ReportResult result = validator().ValidateReport(text);
    ASSERT_EQ(result.errors.size(), 1U) << text;
    EXPECT_EQ(result.errors[0].path, path) << text;
    EXPECT_TRUE(result.properties.empty()) << text;
  }
  EXPECT_TRUE(validator().ValidateReport(R"({"services":[]})").ok());
  EXPECT_TRUE(
      validator()
          .ValidateReport(R"({"x":1,"services":[{"service_id":"meter","properties":{},"y":[1]}]})")
          .ok());
}

TEST_F(ValidatorTest, RejectsOversizeReportsWithoutParsing) {
  ReportResult result = validator().ValidateReport(kValidReport, ReportOptions{.max_bytes = 100});
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kTooLarge);
}

// The walker itself, with the limits of ReportOptions out of the way (they are tested below).
constexpr ReportOptions kNoLimits{.max_depth = SIZE_MAX,
                                  .max_services = SIZE_MAX,
                                  .max_properties = SIZE_MAX,
                                  .max_name_bytes = SIZE_MAX,
                                  .max_string_bytes = SIZE_MAX};

TEST_F(ValidatorTest, SurvivesHugeAndDeepInput) {
  // Deeper than simdjson's depth limit (1024), inside a jsonObject and elsewhere.
  const std::string nest = std::string(5000, '[') + std::string(5000, ']');
  const std::pair<std::string, const char*> cases[] = {
      {Report(R"({"location":{"a":)" + nest + "}}"), ""},  // malformed: too deep
      {Report(R"({"nope":)" + nest + "}"), "services[0].properties.nope"},
      {R"({"services":)" + nest + "}", "services[0]"},
      {nest, ""}};
  for (const auto& [text, path] : cases) {
    ReportResult result = validator().ValidateReport(text, kNoLimits);
    ASSERT_EQ(result.errors.size(), 1U) << path;
    EXPECT_EQ(result.errors[0].path, path);
    EXPECT_TRUE(result.properties.empty());
  }
  ReportResult result;

  const std::string braces(200000, '{');
  result = validator().ValidateReport(braces, kNoLimits);
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kMalformed);

  // 20000 unknown properties: errors are capped and counted.
  std::string many = "{";
  for (int k = 0; k < 20000; ++k) {
    many +=
        (k == 0 ? "" : ",") + std::string("\"p") + std::to_string(k) + "\":" + std::to_string(k);
  }
  many += ",\"voltage\":1}";
  many = Report(many);
  result = validator().ValidateReport(many, kNoLimits);
  EXPECT_EQ(result.errors.size(), 100U);
  EXPECT_EQ(result.dropped_errors, 19900U);
  EXPECT_EQ(result.error_count(), 20000U);
  ASSERT_EQ(result.properties.size(), 1U);  // the valid one still passes

  // A long string value.
  const std::string long_value = Report(R"({"firmware":")" + std::string(500000, 'x') + "\"}");
  result = validator().ValidateReport(long_value, kNoLimits);
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kTooLong);
}

// Each limit of ReportOptions: a report at it is validated as usual, one just over it is refused
// whole, with a single error naming where and which limit.
TEST_F(ValidatorTest, RefusesAReportOverALimitWhole) {
  const ReportOptions limits{.max_depth = 8,
                             .max_services = 2,
                             .max_properties = 3,
                             .max_name_bytes = 10,
                             .max_string_bytes = 5};
  const auto nested = [](int levels) {
    std::string text = "1";
    for (int i = 0; i < levels; ++i) {
      text = R"({"a":)" + text + "}";
    }
    return text;
  };
  const auto entry = [](const std::string& id) {
    return R"({"service_id":")" + id + R"(","properties":{"voltage":1}})";
  };
  struct Case {
    std::string name;
    std::string at_limit;
    std::string over;
    ErrorKind kind;
    std::string path;
  };
  const Case cases[] = {
      // root, services, entry, properties, then the jsonObject value's own levels
      {"depth", Report(R"({"location":)" + nested(4) + "}"),
       Report(R"({"location":)" + nested(5) + "}"), ErrorKind::kTooDeep, ""},
      {"services", R"({"services":[)" + entry("meter") + "," + entry("meter") + "]}",
       R"({"services":[)" + entry("meter") + "," + entry("meter") + "," + entry("meter") + "]}",
       ErrorKind::kTooMany, "services"},
      {"properties", Report(R"({"voltage":1,"current":2,"online":true})"),
       Report(R"({"voltage":1,"current":2,"online":true,"serial":4})"), ErrorKind::kTooMany,
       "services[0].properties"},
      {"property name", Report(R"({"voltage":1,"abcdefghij":2})"),
       Report(R"({"voltage":1,"abcdefghijk":2})"), ErrorKind::kOverlong, "services[0].properties"},
      {"service id", R"({"services":[)" + entry("meter") + "," + entry("abcdefghij") + "]}",
       R"({"services":[)" + entry("meter") + "," + entry("abcdefghijk") + "]}",
       ErrorKind::kOverlong, "services[1].service_id"},
      {"string value", Report(R"({"firmware":"12345","tags":["12345"]})"),
       Report(R"({"firmware":"123456"})"), ErrorKind::kOverlong, "services[0].properties.firmware"},
      {"string list element", Report(R"({"tags":["a","12345"]})"),
       Report(R"({"tags":["a","123456"]})"), ErrorKind::kOverlong,
       "services[0].properties.tags[1]"},
  };
  for (const Case& c : cases) {
    const ReportResult at = validator().ValidateReport(c.at_limit, limits);
    EXPECT_FALSE(at.properties.empty()) << c.name;
    for (const ValidationError& error : at.errors) {
      EXPECT_FALSE(RefusesWholePayload(error.kind)) << c.name << ": " << error.ToString();
    }
    const ReportResult over = validator().ValidateReport(c.over, limits);
    ASSERT_EQ(over.errors.size(), 1U) << c.name;
    EXPECT_EQ(over.errors[0].kind, c.kind) << c.name;
    EXPECT_EQ(over.errors[0].path, c.path) << c.name;
    EXPECT_TRUE(over.services.empty() && over.properties.empty()) << c.name;
    EXPECT_TRUE(RefusesWholePayload(over.errors[0].kind)) << c.name;
  }
  // The reported crash: 800 KB of arrays nested 400,000 deep, refused by the scan.
  const std::string hostile = std::string(400'000, '[') + std::string(400'000, ']');
  const ReportResult deep =
      validator().ValidateReport(hostile, ReportOptions{.max_bytes = 1024 * 1024});
  ASSERT_EQ(deep.errors.size(), 1U);
  EXPECT_EQ(deep.errors[0].kind, ErrorKind::kTooDeep);
}

// Random mutations of valid and invalid reports: nothing crashes, and whatever passes is a
// view into the input that parses as JSON of the property's type.
TEST_F(ValidatorTest, SurvivesRandomMutations) {
  const std::vector<std::string> seeds = {
      kValidReport, Report(R"({"tags":["a","b"],"location":{"x":[1,{"y":"z"}]}})"),
      R"({"services":[{"properties":{"voltage":1},"service_id":"meter"}]})",
      R"({"services":[{"service_id":"meter","properties":{"online":true}},{"service_id":"x"}]})"};
  const std::string alphabet = "{}[]:,\"\\ 0123456789.eE-+truefalsnl\x01\xff\xc3\xa9uXx";
  std::mt19937 rng(20261126);
  ReportResult result;
  const int iterations = FuzzIterations(30000);
  for (int iteration = 0; iteration < iterations; ++iteration) {
    std::string text = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t pos = rng() % text.size();
      switch (rng() % 5) {
        case 0:
          text[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          text.insert(pos, 1, alphabet[rng() % alphabet.size()]);
          break;
        case 2:
          text.erase(pos, 1 + rng() % 8);
          break;
        case 3:
          text.resize(pos);
          break;
        default:
          text.insert(pos, text.substr(rng() % text.size(), rng() % 16));
          break;
      }
    }
    validator().ValidateReport(text, result, ReportOptions{.check_required = (iteration & 1) != 0});
    for (const ReportedService& service : result.services) {
      for (const ReportedProperty& property : result.PropertiesOf(service)) {
        ASSERT_GE(property.value.data(), text.data());
        ASSERT_LE(property.value.data() + property.value.size(), text.data() + text.size());
        const json value = json::parse(property.value, nullptr, /*allow_exceptions=*/false);
        ASSERT_FALSE(value.is_discarded()) << text << " -> " << property.value;
      }
    }
    for (const ValidationError& error : result.errors) {
      ASSERT_FALSE(error.message.empty());
    }
  }
  // Random bytes.
  for (int iteration = 0; iteration < 5000; ++iteration) {
    std::string text(rng() % 200, '\0');
    for (char& c : text) {
      c = static_cast<char>(rng() % 256);
    }
    validator().ValidateReport(text, result);
    EXPECT_FALSE(result.ok());
  }
}

TEST_F(ValidatorTest, IsThreadSafe) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      ReportResult result;
      for (int k = 0; k < 2000; ++k) {
        const std::string text =
            (k + t) % 2 == 0 ? std::string(kValidReport) : Report(R"({"voltage": 9999})");
        validator().ValidateReport(text, result);
        const bool expected_ok = (k + t) % 2 == 0;
        if (result.ok() != expected_ok) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(ValidatorTest, ValidatesWritesToProperties) {
  EXPECT_TRUE(validator()
                  .ValidateProperties("meter", {{"relay_state", "OFF"}, {"report_interval", 30}},
                                      PropertyMode::kWrite)
                  .ok());
  ValidationResult result =
      validator().ValidateProperties("meter", {{"voltage", 220}}, PropertyMode::kWrite);
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kNotWritable);
  EXPECT_EQ(result.errors[0].path, "properties.voltage");
  EXPECT_EQ(result.errors[0].message, "not writable: method is R");
  EXPECT_EQ(common::FieldOf(result.ToStatus()), "properties.voltage");
  // The same property is fine in a report.
  EXPECT_TRUE(
      validator().ValidateProperties("meter", {{"voltage", 220}}, PropertyMode::kReport).ok());

  result = validator().ValidateProperties(
      "meter", {{"report_interval", 0}, {"relay_state", "DIM"}, {"nope", 1}}, PropertyMode::kWrite);
  ASSERT_EQ(result.errors.size(), 3U);
  EXPECT_EQ(result.ToStatus().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.ToStatus().message()), HasSubstr("(and 2 more errors)"));
  std::vector<std::string> paths;
  for (const auto& error : result.errors) {
    paths.push_back(error.path);
  }
  EXPECT_THAT(paths, ::testing::UnorderedElementsAre("properties.report_interval",
                                                     "properties.relay_state", "properties.nope"));
}

TEST_F(ValidatorTest, ValidatesAFullState) {
  ValidationResult result =
      validator().ValidateProperties("meter", {{"voltage", 1}}, PropertyMode::kFullState);
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kMissingRequired);
  EXPECT_EQ(result.errors[0].path, "properties.current");
  EXPECT_TRUE(
      validator()
          .ValidateProperties("meter", {{"voltage", 1}, {"current", 2.5}}, PropertyMode::kFullState)
          .ok());
  EXPECT_TRUE(validator()
                  .ValidateProperties("meter", {{"tags", {"a", "b"}}, {"location", {{"a", 1}}}},
                                      PropertyMode::kReport)
                  .ok());
  result = validator().ValidateProperties("meter", {{"tags", {"a", 5}}}, PropertyMode::kReport);
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].path, "properties.tags[1]");
}

TEST_F(ValidatorTest, RejectsPropertiesOfUnknownServicesAndNonObjects) {
  ValidationResult result =
      validator().ValidateProperties("water", json::object(), PropertyMode::kWrite);
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kUnknownService);
  EXPECT_EQ(result.errors[0].path, "service_id");
  result = validator().ValidateProperties("meter", json::array(), PropertyMode::kWrite);
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kMalformed);
  EXPECT_EQ(result.errors[0].path, "properties");
}

TEST_F(ValidatorTest, ValidatesCommands) {
  EXPECT_TRUE(validator().ValidateCommand("meter", "reboot", {{"delay", 10}}).ok());
  EXPECT_TRUE(validator()
                  .ValidateCommand("meter", "set_tariff", {{"tariff", "peak"}, {"price", 0.85}})
                  .ok());

  const struct {
    const char* service;
    const char* command;
    json paras;
    ErrorKind kind;
    const char* path;
  } cases[] = {
      {"water", "reboot", json::object(), ErrorKind::kUnknownService, "service_id"},
      {"meter", "shutdown", json::object(), ErrorKind::kUnknownCommand, "command_name"},
      {"meter", "reboot", {{"delay", 61}}, ErrorKind::kOutOfRange, "paras.delay"},
      {"meter", "reboot", {{"delay", "5"}}, ErrorKind::kWrongType, "paras.delay"},
      {"meter", "reboot", json::object(), ErrorKind::kMissingRequired, "paras.delay"},
      {"meter", "reboot", nullptr, ErrorKind::kMissingRequired, "paras.delay"},
      {"meter", "reboot", json::array(), ErrorKind::kMalformed, "paras"},
      {"meter",
       "set_tariff",
       {{"tariff", "night"}, {"price", 1}},
       ErrorKind::kNotInEnum,
       "paras.tariff"},
      {"meter",
       "set_tariff",
       {{"tariff", "peak"}, {"price", 11}},
       ErrorKind::kOutOfRange,
       "paras.price"},
      {"meter", "reboot", {{"delay", 1}, {"force", true}}, ErrorKind::kUnknownPara, "paras.force"},
  };
  for (const auto& c : cases) {
    ValidationResult result = validator().ValidateCommand(c.service, c.command, c.paras);
    ASSERT_EQ(result.errors.size(), 1U) << c.command << " " << c.paras.dump();
    EXPECT_EQ(result.errors[0].kind, c.kind) << result.errors[0].ToString();
    EXPECT_EQ(result.errors[0].path, c.path);
    EXPECT_EQ(common::FieldOf(result.ToStatus()), c.path);
  }
}

TEST_F(ValidatorTest, ValidatesEvents) {
  EXPECT_TRUE(validator().ValidateEvent("meter", "overload", {{"current", 120.5}}).ok());
  ValidationResult result = validator().ValidateEvent("meter", "fire", json::object());
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kUnknownEvent);
  EXPECT_EQ(result.errors[0].path, "event_type");
  result = validator().ValidateEvent("meter", "overload", {{"current", "high"}});
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kWrongType);
  EXPECT_EQ(result.errors[0].path, "paras.current");
  result = validator().ValidateEvent("meter", "overload", json::object());
  ASSERT_EQ(result.errors.size(), 1U);
  EXPECT_EQ(result.errors[0].kind, ErrorKind::kMissingRequired);
}

TEST(DateTimeTest, AcceptsIotdaAndIso8601) {
  for (const char* text :
       {"20261126T174248Z", "20240229T000000Z", "2026-11-26T17:42:48Z", "2026-11-26t17:42:48z",
        "2026-11-26T17:42:48.1Z", "2026-11-26T17:42:48.123456789+08:00", "2026-11-26T17:42:48-0530",
        "20261126T174248.5Z", "2016-12-31T23:59:60Z"}) {
    EXPECT_TRUE(IsValidDateTime(text)) << text;
  }
  for (const char* text :
       {"", "20261126", "20261126T174248", "2026-11-26T17:42:48", "20261126T174248+8",
        "20231229T246000Z", "20230229T000000Z", "20261131T000000Z", "2026-13-01T00:00:00Z",
        "2026-11-26 17:42:48Z", "2026-11-26T17:42:48.Z", "2026-11-26T17:42:48ZZ", "yesterday",
        "２０２６-11-26T17:42:48Z", "2026-11-26T17:42:48.1234567890Z"}) {
    EXPECT_FALSE(IsValidDateTime(text)) << text;
  }
}

}  // namespace
}  // namespace iot::thing_model
