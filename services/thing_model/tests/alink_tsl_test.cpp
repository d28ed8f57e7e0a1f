// The Alibaba TSL → Huawei-form model conversion (issue 17): every data type, function blocks,
// implicit set/get/post, call types, and invalid TSLs with their JSON paths.
#include "iot/thing_model/alink_tsl.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "iot/common/status.h"
#include "iot/thing_model/validator.h"

namespace iot::thing_model {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json Thermostat() {
  std::ifstream in(std::string(IOT_ALINK_TESTDATA) + "/thermostat_tsl.json");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return json::parse(buffer.str());
}

/// The derived model with a product id and name, compiled as the service compiles it.
ProductModel Compile(const TslModel& tsl) {
  json model = tsl.model;
  model["product_id"] = "a1Thermo7Kx";
  model["name"] = "thermostat";
  auto parsed = ParseProductModel(model.dump());
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return *std::move(parsed);
}

const json& ServiceOf(const json& model, const std::string& service_id) {
  for (const json& service : model["service_capabilities"]) {
    if (service["service_id"] == service_id) {
      return service;
    }
  }
  ADD_FAILURE() << "no service " << service_id;
  static const json kNone = json::object();
  return kNone;
}

const json& Named(const json& list, const char* key, const std::string& name) {
  for (const json& item : list) {
    if (item.value(key, "") == name) {
      return item;
    }
  }
  ADD_FAILURE() << "no " << key << " " << name << " in " << list.dump();
  static const json kNone = json::object();
  return kNone;
}

TEST(AlinkTslTest, SampleThermostatConverts) {
  auto tsl = ConvertTsl(Thermostat().dump());
  ASSERT_TRUE(tsl.ok()) << tsl.status();
  EXPECT_EQ(tsl->product_key, "a1Thermo7Kx");
  EXPECT_EQ(tsl->product_name, "");
  const json& model = tsl->model;
  ASSERT_EQ(model["service_capabilities"].size(), 2u);
  EXPECT_EQ(model["service_capabilities"][0]["service_id"], "default");
  EXPECT_EQ(model["service_capabilities"][1]["service_id"], "airQuality");

  const json& properties = ServiceOf(model, "default")["properties"];
  ASSERT_EQ(properties.size(), 10u) << properties.dump();
  const json& current = Named(properties, "property_name", "CurrentTemperature");
  EXPECT_EQ(current["data_type"], "decimal");
  EXPECT_EQ(current["method"], "R");
  EXPECT_EQ(current["min"], "-40");
  EXPECT_EQ(current["max"], "120");
  EXPECT_EQ(current["step"], "0.1");
  EXPECT_EQ(current["unit"], "°C");
  EXPECT_EQ(current["description"], "Current temperature");
  EXPECT_EQ(current["alink_type"], "float");
  EXPECT_FALSE(current.contains("required")) << "Alibaba's required is no presence rule";
  EXPECT_EQ(Named(properties, "property_name", "TargetTemperature")["method"], "RW");

  // The compiled model is what validation runs on.
  const ProductModel product = Compile(*tsl);
  const Service* service = product.FindService("default");
  ASSERT_NE(service, nullptr);
  ASSERT_EQ(service->properties.size(), 10u);
  EXPECT_TRUE(service->properties.required.empty());
  EXPECT_EQ(service->commands.size(), 2u);
  EXPECT_EQ(service->events.size(), 2u);
  const Service* air = product.FindService("airQuality");
  ASSERT_NE(air, nullptr);
  EXPECT_NE(air->properties.Find("PM25"), nullptr);
  EXPECT_NE(air->properties.Find("CO2"), nullptr);
  EXPECT_NE(air->FindEvent("PoorAir"), nullptr);
}

TEST(AlinkTslTest, EveryDataTypeMaps) {
  struct Case {
    json data_type;
    json expected;  // fields the derived property must have
  };
  const std::vector<Case> cases = {
      {{{"type", "int"}, {"specs", {{"min", "-5"}, {"max", "5"}, {"step", "1"}, {"unit", "m"}}}},
       {{"data_type", "int"}, {"min", "-5"}, {"max", "5"}, {"step", "1"}, {"unit", "m"}}},
      {{{"type", "float"}, {"specs", {{"min", "0.5"}, {"max", "1.5"}}}},
       {{"data_type", "decimal"}, {"min", "0.5"}, {"max", "1.5"}}},
      {{{"type", "double"}, {"specs", {{"min", -1}, {"max", 1e3}}}},
       {{"data_type", "decimal"}, {"min", "-1"}, {"max", "1000.0"}}},
      {{{"type", "text"}, {"specs", {{"length", "2048"}}}},
       {{"data_type", "string"}, {"max_length", 2048}}},
      {{{"type", "date"}, {"specs", json::object()}}, {{"data_type", "string"}}},
      {{{"type", "bool"}, {"specs", {{"0", "off"}, {"1", "on"}}}}, {{"data_type", "boolean"}}},
      {{{"type", "enum"}, {"specs", {{"2", "b"}, {"0", "a"}, {"7", "c"}}}},
       {{"data_type", "int"}, {"enum_list", {"0", "2", "7"}}, {"min", "0"}, {"max", "7"}}},
      {{{"type", "struct"},
        {"specs",
         {{{"identifier", "x"}, {"name", "X"}, {"dataType", {{"type", "int"}}}},
          {{"identifier", "y"}, {"name", "Y"}, {"dataType", {{"type", "text"}}}}}}},
       {{"data_type", "jsonObject"}}},
      {{{"type", "array"}, {"specs", {{"size", "10"}, {"item", {{"type", "int"}}}}}},
       {{"data_type", "jsonObject"}}},
      {{{"type", "array"},
        {"specs", {{"size", "4"}, {"item", {{"type", "text"}, {"specs", {{"length", "16"}}}}}}}},
       {{"data_type", "string list"}, {"max_length", 16}}},
      {{{"type", "array"},
        {"specs",
         {{"size", "3"},
          {"item",
           {{"type", "struct"},
            {"specs", {{{"identifier", "a"}, {"dataType", {{"type", "float"}}}}}}}}}}},
       {{"data_type", "jsonObject"}}},
  };
  for (const Case& c : cases) {
    const json tsl = {
        {"properties", {{{"identifier", "p"}, {"accessMode", "rw"}, {"dataType", c.data_type}}}}};
    auto converted = ConvertTsl(tsl.dump());
    ASSERT_TRUE(converted.ok()) << c.data_type.dump() << ": " << converted.status();
    const json& property = converted->model["service_capabilities"][0]["properties"][0];
    for (const auto& [key, value] : c.expected.items()) {
      EXPECT_EQ(property[key], value) << c.data_type.dump() << " " << key;
    }
    EXPECT_EQ(property["alink_type"], c.data_type["type"]);
    Compile(*converted);
  }
}

TEST(AlinkTslTest, DerivedModelValidatesValues) {
  auto tsl = ConvertTsl(Thermostat().dump());
  ASSERT_TRUE(tsl.ok()) << tsl.status();
  const Validator validator(Compile(*tsl).model);
  auto props = [&](const json& properties) {
    return validator.ValidateProperties("default", properties, PropertyMode::kReport);
  };
  EXPECT_TRUE(props({{"CurrentTemperature", 21.5},
                     {"PowerSwitch", true},
                     {"WorkMode", 2},
                     {"Label", "hall"},
                     {"LastMaintenance", "1700000000000"},
                     {"Schedule", {{"StartHour", 6}, {"EndHour", 22}, {"Setpoint", 21}}},
                     {"Zones", {"north", "south"}}})
                  .ok());
  EXPECT_FALSE(props({{"CurrentTemperature", 500}}).ok());
  EXPECT_FALSE(props({{"WorkMode", 9}}).ok()) << "above the largest enum key";
  EXPECT_FALSE(props({{"Label", std::string(65, 'x')}}).ok());
  EXPECT_FALSE(props({{"Zones", {1, 2}}}).ok());
  // Arrays of numbers or structs are jsonObjects that take arrays; other jsonObjects do not.
  EXPECT_TRUE(props({{"RecentTemperatures", {20.5, 21, 19.75}}}).ok());
  EXPECT_FALSE(props({{"Schedule", {1, 2}}}).ok());
  const std::string report =
      R"({"services":[{"service_id":"default","properties":{"RecentTemperatures":[20.5,21],)"
      R"("Schedule":[6,22],"Zones":["a"]}}]})";
  const ReportResult result = validator.ValidateReport(report);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].path, "services[0].properties.Schedule");
  ASSERT_EQ(result.properties.size(), 2u);
  EXPECT_EQ(result.properties[0].name, "RecentTemperatures");
  EXPECT_EQ(result.properties[0].value, "[20.5,21]");
  EXPECT_FALSE(
      validator
          .ValidateReport(std::string_view(R"({"services":[{"service_id":"default",)"
                                           R"("properties":{"RecentTemperatures":[1,}}]})"))
          .ok())
      << "malformed inside the array";
  // Writes need rw: CurrentTemperature is r.
  EXPECT_FALSE(
      validator.ValidateProperties("default", {{"CurrentTemperature", 20}}, PropertyMode::kWrite)
          .ok());
  EXPECT_TRUE(
      validator.ValidateProperties("default", {{"TargetTemperature", 20}}, PropertyMode::kWrite)
          .ok());
  EXPECT_TRUE(validator.ValidateCommand("default", "Calibrate", {{"Offset", 1.5}}).ok());
  EXPECT_FALSE(validator.ValidateCommand("default", "Calibrate", {{"Offset", 9}}).ok());
  EXPECT_TRUE(validator.ValidateEvent("airQuality", "PoorAir", {{"PM25", 300}}).ok());
}

TEST(AlinkTslTest, ServicesAndEventsKeepCallTypeAndLevelAndSkipTheImplicitOnes) {
  auto tsl = ConvertTsl(Thermostat().dump());
  ASSERT_TRUE(tsl.ok()) << tsl.status();
  const json& service = ServiceOf(tsl->model, "default");
  ASSERT_EQ(service["commands"].size(), 2u) << "set and get are implicit";
  const json& calibrate = Named(service["commands"], "command_name", "Calibrate");
  EXPECT_EQ(calibrate["call_type"], "sync");
  EXPECT_EQ(calibrate["description"], "Calibrate the sensor");
  ASSERT_EQ(calibrate["paras"].size(), 1u);
  EXPECT_EQ(calibrate["paras"][0]["para_name"], "Offset");
  EXPECT_EQ(calibrate["paras"][0]["data_type"], "decimal");
  EXPECT_EQ(calibrate["paras"][0]["max"], "5");
  ASSERT_EQ(calibrate["responses"].size(), 1u);
  EXPECT_EQ(calibrate["responses"][0]["paras"][0]["para_name"], "Applied");
  EXPECT_EQ(calibrate["responses"][0]["paras"][0]["data_type"], "boolean");
  EXPECT_EQ(Named(service["commands"], "command_name", "Reboot")["call_type"], "async");

  ASSERT_EQ(service["events"].size(), 2u) << "post is implicit";
  const json& alert = Named(service["events"], "event_type", "HighTemperatureAlert");
  EXPECT_EQ(alert["event_level"], "alert");
  ASSERT_EQ(alert["paras"].size(), 2u);
  EXPECT_EQ(alert["paras"][1]["para_name"], "Threshold");
  EXPECT_EQ(Named(service["events"], "event_type", "Fault")["event_level"], "error");

  // callType absent: async; event type absent: info.
  const json minimal = {{"services", {{{"identifier", "s"}, {"inputData", json::array()}}}},
                        {"events", {{{"identifier", "e"}, {"outputData", json::array()}}}}};
  auto converted = ConvertTsl(minimal.dump());
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->model["service_capabilities"][0]["commands"][0]["call_type"], "async");
  EXPECT_EQ(converted->model["service_capabilities"][0]["events"][0]["event_level"], "info");
  EXPECT_EQ(converted->model["service_capabilities"][0]["commands"][0]["responses"], json::array());
}

TEST(AlinkTslTest, CustomFunctionBlocksBecomeServices) {
  const json tsl = json::parse(R"({
    "profile": {"productKey": "a1Blocks000", "productName": "Blocks"},
    "properties": [
      {"identifier": "Humidity", "accessMode": "r", "dataType": {"type": "int"}},
      {"identifier": "air:Humidity", "accessMode": "r", "dataType": {"type": "int"}},
      {"identifier": "air:PM10", "accessMode": "rw", "dataType": {"type": "float"}},
      {"identifier": "light:Level", "accessMode": "rw", "dataType": {"type": "int"}}
    ],
    "services": [{"identifier": "light:Blink", "callType": "sync",
                  "inputData": [{"identifier": "Times", "dataType": {"type": "int"}}]}],
    "events": [{"identifier": "air:Alarm", "type": "alert", "outputData": []}]
  })");
  auto converted = ConvertTsl(tsl.dump());
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->product_key, "a1Blocks000");
  EXPECT_EQ(converted->product_name, "Blocks");
  const json& model = converted->model;
  ASSERT_EQ(model["service_capabilities"].size(), 3u);
  EXPECT_EQ(ServiceOf(model, "default")["properties"].size(), 1u);
  const json& air = ServiceOf(model, "air");
  ASSERT_EQ(air["properties"].size(), 2u);
  EXPECT_EQ(air["properties"][0]["property_name"], "Humidity");
  EXPECT_EQ(air["properties"][1]["property_name"], "PM10");
  EXPECT_EQ(air["events"][0]["event_type"], "Alarm");
  const json& light = ServiceOf(model, "light");
  EXPECT_EQ(light["properties"][0]["property_name"], "Level");
  EXPECT_EQ(light["commands"][0]["command_name"], "Blink");
  EXPECT_EQ(light["commands"][0]["call_type"], "sync");
  const ProductModel product = Compile(*converted);
  EXPECT_NE(product.FindService("light")->FindCommand("Blink"), nullptr);
}

TEST(AlinkTslTest, ProductKeyIsOptionalButChecked) {
  auto none = ConvertTsl(R"({"properties": []})");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->product_key, "");
  ASSERT_EQ(none->model["service_capabilities"].size(), 1u);
  EXPECT_EQ(none->model["service_capabilities"][0]["service_id"], "default");
  EXPECT_TRUE(IsValidProductKey("a1B2c3D4e5F"));
  EXPECT_TRUE(IsValidProductKey(std::string(32, 'k')));
  EXPECT_FALSE(IsValidProductKey(std::string(33, 'k')));
  EXPECT_FALSE(IsValidProductKey(""));
  EXPECT_FALSE(IsValidProductKey("a1_b"));
}

struct InvalidCase {
  const char* name;
  const char* pointer;  // into the thermostat TSL; empty: replace the whole document
  json value;
  const char* path;
  const char* message;
};

TEST(AlinkTslTest, InvalidTslsAreRejectedWithTheirPath) {
  const std::vector<InvalidCase> cases = {
      {"wrong type", "/properties/0/dataType/type", "number", "properties[0].dataType.type",
       "unknown type 'number'"},
      {"type not a string", "/properties/1/dataType/type", 3, "properties[1].dataType.type",
       "must be a string"},
      {"dataType missing", "/properties/2/dataType", nullptr, "properties[2].dataType", "required"},
      {"min not numeric", "/properties/0/dataType/specs/min", "cold",
       "properties[0].dataType.specs.min", "not numeric: 'cold'"},
      {"min above max", "/properties/0/dataType/specs/min", "200",
       "properties[0].dataType.specs.max", "min (200) > max (120)"},
      {"int min not integral", "/properties/4/dataType/specs/min", "0.5",
       "properties[4].dataType.specs.min", "must be an integer"},
      {"step not positive", "/properties/4/dataType/specs/step", "0",
       "properties[4].dataType.specs.step", "must be > 0"},
      {"specs not an object", "/properties/4/dataType/specs", json::array(),
       "properties[4].dataType.specs", "must be an object"},
      {"bad text length", "/properties/5/dataType/specs/length", "-1",
       "properties[5].dataType.specs.length", "must be an integer >= 0"},
      {"bool key", "/properties/2/dataType/specs/2", "maybe", "properties[2].dataType.specs.2",
       "bool values are 0 and 1"},
      {"enum without values", "/properties/3/dataType/specs", json::object(),
       "properties[3].dataType.specs", "needs an object of at least one value"},
      {"enum key not integral", "/properties/3/dataType/specs/x", "unknown",
       "properties[3].dataType.specs.x", "enum values are integers"},
      {"struct specs not an array", "/properties/7/dataType/specs", json::object(),
       "properties[7].dataType.specs", "must be an array"},
      {"struct member type", "/properties/7/dataType/specs/1/dataType/type", "long",
       "properties[7].dataType.specs[1].dataType.type", "unknown type 'long'"},
      {"struct member without identifier", "/properties/7/dataType/specs/2/identifier", nullptr,
       "properties[7].dataType.specs[2].identifier", "required"},
      {"struct member duplicate", "/properties/7/dataType/specs/1/identifier", "StartHour",
       "properties[7].dataType.specs[1].identifier",
       "duplicate identifier 'StartHour' (also properties[7].dataType.specs[0])"},
      {"array size", "/properties/8/dataType/specs/size", "0", "properties[8].dataType.specs.size",
       "must be an integer >= 1"},
      {"array item type", "/properties/8/dataType/specs/item/type", "date",
       "properties[8].dataType.specs.item.type", "unknown type 'date'"},
      {"array without item", "/properties/8/dataType/specs/item", nullptr,
       "properties[8].dataType.specs.item", "required"},
      {"missing identifier", "/properties/1/identifier", nullptr, "properties[1].identifier",
       "required"},
      {"identifier not a string", "/events/1/identifier", 7, "events[1].identifier",
       "must be a string"},
      {"bad identifier", "/properties/1/identifier", "Target Temperature",
       "properties[1].identifier", "bad identifier 'Target Temperature'"},
      {"two colons", "/properties/10/identifier", "a:b:c", "properties[10].identifier",
       "bad identifier 'a:b:c'"},
      {"empty block", "/properties/10/identifier", ":PM25", "properties[10].identifier",
       "bad identifier ':PM25'"},
      {"duplicate property", "/properties/2/identifier", "CurrentTemperature",
       "properties[2].identifier",
       "duplicate identifier 'CurrentTemperature' (also properties[0])"},
      {"service named like a property", "/services/2/identifier", "FanSpeed",
       "services[2].identifier", "duplicate identifier 'FanSpeed' (also properties[4])"},
      {"duplicate in a block", "/events/3/identifier", "airQuality:PM25", "events[3].identifier",
       "duplicate identifier 'airQuality:PM25' (also properties[10])"},
      {"duplicate input para",
       "/services/3/inputData/1",
       {{"identifier", "DelaySeconds"}, {"dataType", {{"type", "int"}}}},
       "services[3].inputData[1].identifier",
       "duplicate identifier 'DelaySeconds' (also services[3].inputData[0])"},
      {"para identifier with a block", "/services/2/outputData/0/identifier", "x:Applied",
       "services[2].outputData[0].identifier", "bad identifier 'x:Applied'"},
      {"output para type", "/events/2/outputData/0/dataType/type", "list",
       "events[2].outputData[0].dataType.type", "unknown type 'list'"},
      {"accessMode", "/properties/0/accessMode", "w", "properties[0].accessMode",
       "must be \"r\" or \"rw\""},
      {"accessMode missing", "/properties/0/accessMode", nullptr, "properties[0].accessMode",
       "required"},
      {"callType", "/services/2/callType", "later", "services[2].callType",
       "must be \"sync\" or \"async\""},
      {"event type", "/events/1/type", "warning", "events[1].type",
       "must be \"info\", \"alert\" or \"error\""},
      {"properties not an array", "/properties", json::object(), "properties", "must be an array"},
      {"property not an object", "/properties/0", "CurrentTemperature", "properties[0]",
       "must be an object"},
      {"bad productKey", "/profile/productKey", "a1-bad", "profile.productKey",
       "'a1-bad' is not 1..32 characters of A-Z, a-z, 0-9"},
      {"long productKey", "/profile/productKey", std::string(33, 'k'), "profile.productKey",
       "is not 1..32 characters"},
      {"productKey not a string", "/profile/productKey", 12, "profile.productKey",
       "must be a string"},
      {"profile not an object", "/profile", "a1", "profile", "must be an object"},
      {"long productName", "/profile/productName", std::string(129, 'n'), "profile.productName",
       "longer than 128 characters"},
  };
  for (const InvalidCase& c : cases) {
    json tsl = Thermostat();
    if (c.value.is_null()) {
      const json::json_pointer pointer(c.pointer);
      tsl[pointer.parent_pointer()].erase(pointer.back());
    } else {
      tsl[json::json_pointer(c.pointer)] = c.value;
    }
    ModelDiagnostics diagnostics;
    auto converted = ConvertTsl(tsl.dump(), &diagnostics);
    ASSERT_FALSE(converted.ok()) << c.name;
    EXPECT_EQ(converted.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_EQ(common::FieldOf(converted.status()), c.path) << c.name << ": " << converted.status();
    EXPECT_THAT(std::string(converted.status().message()), HasSubstr(c.message)) << c.name;
    ASSERT_FALSE(diagnostics.errors.empty()) << c.name;
    EXPECT_EQ(diagnostics.errors[0].path, c.path) << c.name;
  }
}

TEST(AlinkTslTest, EveryErrorIsCollected) {
  json tsl = Thermostat();
  tsl["properties"][0]["dataType"]["type"] = "number";
  tsl["properties"][4]["accessMode"] = "x";
  tsl["services"][3]["callType"] = "never";
  ModelDiagnostics diagnostics;
  auto converted = ConvertTsl(tsl.dump(), &diagnostics);
  ASSERT_FALSE(converted.ok());
  EXPECT_THAT(std::string(converted.status().message()), HasSubstr("(and 2 more errors)"));
  ASSERT_EQ(diagnostics.errors.size(), 3u);
  EXPECT_EQ(diagnostics.errors[1].path, "properties[4].accessMode");
  EXPECT_EQ(diagnostics.errors[2].path, "services[3].callType");
}

TEST(AlinkTslTest, DocumentsOutsideTheLimitsOrNotObjects) {
  auto not_json = ConvertTsl("{\"properties\": [");
  ASSERT_FALSE(not_json.ok());
  EXPECT_THAT(std::string(not_json.status().message()), HasSubstr("not valid JSON"));
  auto array = ConvertTsl("[]");
  ASSERT_FALSE(array.ok());
  EXPECT_EQ(array.status().message(), "TSL must be a JSON object");
  const std::string deep =
      std::string(kMaxModelDepth + 1, '[') + std::string(kMaxModelDepth + 1, ']');
  auto too_deep = ConvertTsl(deep);
  ASSERT_FALSE(too_deep.ok());
  EXPECT_EQ(too_deep.status().message(), "TSL nested deeper than 64 levels");
  std::string large = Thermostat().dump();
  large.append(kMaxModelBytes + 1 - large.size(), ' ');
  auto too_large = ConvertTsl(large);
  ASSERT_FALSE(too_large.ok());
  EXPECT_EQ(too_large.status().message(), "TSL too large: 512001 bytes > 512000 bytes");
  large.pop_back();
  EXPECT_TRUE(ConvertTsl(large).ok());
}

}  // namespace
}  // namespace iot::thing_model
