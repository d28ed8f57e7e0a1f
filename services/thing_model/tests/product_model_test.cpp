#include "iot/thing_model/product_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>

#include "iot/common/status.h"

namespace iot::thing_model {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string ReadTestdata(const std::string& name) {
  std::ifstream in(std::string(IOT_THING_MODEL_TESTDATA) + "/" + name);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A small valid model; each invalid-model case patches one thing into it.
json BaseModel() {
  return json::parse(R"({
    "name": "Base",
    "service_capabilities": [{
      "service_id": "s",
      "properties": [
        {"property_name": "p", "data_type": "int", "min": "0", "max": "10", "method": "RW"},
        {"property_name": "q", "data_type": "string", "method": "R"}
      ],
      "commands": [{
        "command_name": "c",
        "paras": [{"para_name": "x", "data_type": "int"}],
        "responses": [{"response_name": "r", "paras": [{"para_name": "y", "data_type": "string"}]}]
      }],
      "events": [{"event_type": "e", "paras": [{"para_name": "z", "data_type": "decimal"}]}]
    }]
  })");
}

absl::StatusOr<ProductModel> Parse(const json& model, ModelDiagnostics* diagnostics = nullptr) {
  return ParseProductModel(model.dump(), diagnostics);
}

TEST(ProductModelTest, ParsesTheSmartMeterWithEveryDataType) {
  const std::string text = ReadTestdata("smart_meter.json");
  ModelDiagnostics diagnostics;
  auto model = ParseProductModel(text, &diagnostics);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(diagnostics.errors.empty());
  EXPECT_TRUE(diagnostics.warnings.empty()) << diagnostics.warnings.front().ToString();

  EXPECT_EQ(model->product_id, "smart-meter-v1");
  EXPECT_EQ(model->name, "SmartMeter");
  EXPECT_EQ(model->device_type, "ElectricityMeter");
  EXPECT_EQ(model->protocol_type, "MQTT");
  EXPECT_EQ(model->data_format, "json");
  EXPECT_EQ(model->manufacturer_name, "Acme");
  EXPECT_EQ(model->industry, "energy");
  ASSERT_EQ(model->services().size(), 1U);

  const Service* meter = model->FindService("meter");
  ASSERT_NE(meter, nullptr);
  EXPECT_EQ(model->FindService("nope"), nullptr);
  EXPECT_EQ(meter->option, "Mandatory");
  ASSERT_EQ(meter->properties.size(), 11U);

  const std::pair<const char*, DataType> types[] = {{"voltage", DataType::kDecimal},
                                                    {"current", DataType::kDecimal},
                                                    {"total_energy", DataType::kDecimal},
                                                    {"relay_state", DataType::kEnum},
                                                    {"report_interval", DataType::kInt},
                                                    {"firmware", DataType::kString},
                                                    {"installed_at", DataType::kDateTime},
                                                    {"location", DataType::kJsonObject},
                                                    {"tags", DataType::kStringList},
                                                    {"online", DataType::kBoolean},
                                                    {"serial", DataType::kLong}};
  for (const auto& [name, type] : types) {
    const Parameter* param = meter->properties.Find(name);
    ASSERT_NE(param, nullptr) << name;
    EXPECT_EQ(param->type, type) << name;
    EXPECT_EQ(param->name, name);
  }

  const Parameter* voltage = meter->properties.Find("voltage");
  EXPECT_TRUE(voltage->required);
  ASSERT_TRUE(voltage->min && voltage->max && voltage->step);
  EXPECT_EQ(voltage->min->text, "0");
  EXPECT_EQ(voltage->max->value, 500.0);
  EXPECT_EQ(voltage->step->text, "0.1");
  EXPECT_FALSE(voltage->Writable());
  EXPECT_EQ(voltage->unit, "V");

  const Parameter* interval = meter->properties.Find("report_interval");
  EXPECT_EQ(interval->method, kMethodRead | kMethodWrite);
  EXPECT_TRUE(interval->Writable());
  EXPECT_EQ(interval->min->integer, 1);
  EXPECT_EQ(interval->max->integer, 3600);
  EXPECT_EQ(interval->max->text, "3600");
  EXPECT_EQ(interval->default_value, 60);

  const Parameter* relay = meter->properties.Find("relay_state");
  EXPECT_THAT(relay->enum_list, ::testing::ElementsAre("ON", "OFF"));
  EXPECT_TRUE(relay->InEnum("OFF"));
  EXPECT_FALSE(relay->InEnum("off"));
  EXPECT_EQ(meter->properties.Find("firmware")->max_length, 32);
  EXPECT_THAT(meter->properties.required, ::testing::ElementsAre(0U, 1U));

  ASSERT_EQ(meter->commands.size(), 2U);
  const Command* reboot = meter->FindCommand("reboot");
  ASSERT_NE(reboot, nullptr);
  ASSERT_NE(reboot->paras.Find("delay"), nullptr);
  EXPECT_EQ(reboot->paras.Find("delay")->max->integer, 60);
  ASSERT_EQ(reboot->responses.size(), 1U);
  EXPECT_EQ(reboot->responses[0].name, "reboot_response");
  EXPECT_NE(reboot->responses[0].paras.Find("result"), nullptr);
  const Command* tariff = meter->FindCommand("set_tariff");
  ASSERT_NE(tariff, nullptr);
  EXPECT_EQ(tariff->paras.Find("tariff")->type, DataType::kEnum);
  EXPECT_EQ(tariff->paras.Find("price")->type, DataType::kDecimal);
  EXPECT_EQ(tariff->responses[0].paras.Find("applied_at")->type, DataType::kDateTime);
  EXPECT_EQ(meter->FindCommand("nope"), nullptr);

  const Event* overload = meter->FindEvent("overload");
  ASSERT_NE(overload, nullptr);
  EXPECT_EQ(overload->paras.Find("current")->type, DataType::kDecimal);
  EXPECT_EQ(meter->FindEvent("nope"), nullptr);
  EXPECT_EQ(model->model->max_properties(), 11U);
}

TEST(ProductModelTest, KeepsTheDocumentForTheRoundTrip) {
  for (const char* file : {"smart_meter.json", "iotda_export.json"}) {
    const std::string text = ReadTestdata(file);
    auto model = ParseProductModel(text);
    ASSERT_TRUE(model.ok()) << file << ": " << model.status();
    EXPECT_EQ(model->source, text) << file;
    EXPECT_EQ(json::parse(model->source), json::parse(text)) << file;
  }
}

TEST(ProductModelTest, ImportsARealIotdaExportLeniently) {
  const std::string text = ReadTestdata("iotda_export.json");
  ModelDiagnostics diagnostics;
  auto model = ParseProductModel(text, &diagnostics);
  ASSERT_TRUE(model.ok()) << model.status();
  // Unknown fields stay in the document.
  const json kept = json::parse(model->source);
  EXPECT_EQ(kept["app_id"], "7a4b0c1d2e3f4a5b6c7d8e9f00112233");
  EXPECT_EQ(kept["model"], "123");
  EXPECT_EQ(kept["create_time"], "20190303T081011Z");

  const Service* service = model->FindService("temperature");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(service->option, "Optional");
  EXPECT_TRUE(service->events.empty());  // "events": null
  const Parameter* temperature = service->properties.Find("temperature");
  ASSERT_NE(temperature, nullptr);
  EXPECT_EQ(temperature->min->text, "1");  // given as a string, given back as a string
  EXPECT_EQ(temperature->max->value, 100.0);
  EXPECT_FALSE(temperature->max_length);  // ignored on a decimal
  const Parameter* status = service->properties.Find("status");
  EXPECT_EQ(status->max_length, 64);  // "64" as a string
  EXPECT_FALSE(status->min);          // min/max/step ignored on a string
  EXPECT_TRUE(status->enum_list.empty());
  EXPECT_EQ(status->method, kMethodRead | kMethodWrite | kMethodExecute);
  EXPECT_EQ(service->FindCommand("reboot")->responses[0].name, "ACK");

  // What IoTDA ignores is reported as warnings, with paths.
  std::vector<std::string> warnings;
  for (const auto& warning : diagnostics.warnings) {
    warnings.push_back(warning.ToString());
  }
  EXPECT_THAT(
      warnings,
      ::testing::Contains(
          "service_capabilities[0].properties[0].max_length: ignored for data_type decimal"));
  EXPECT_THAT(warnings,
              ::testing::Contains(
                  "service_capabilities[0].properties[1].min: ignored for data_type string"));
  EXPECT_THAT(warnings,
              ::testing::Contains("service_capabilities[0].properties[1].step: ignored for "
                                  "data_type string"));
}

TEST(ProductModelTest, DataTypeNamesAreIotdaSpellings) {
  EXPECT_EQ(DataTypeName(DataType::kDateTime), "DateTime");
  EXPECT_EQ(DataTypeName(DataType::kStringList), "string list");
  EXPECT_EQ(DataTypeName(DataType::kJsonObject), "jsonObject");
  EXPECT_EQ(DataTypeFromName("string list"), DataType::kStringList);
  EXPECT_EQ(DataTypeFromName("datetime"), std::nullopt);
  EXPECT_EQ(DataTypeFromName("Int"), std::nullopt);
  EXPECT_EQ(DataTypeFromName("float"), std::nullopt);
}

struct InvalidCase {
  const char* name;
  const char* pointer;  // JSON pointer into BaseModel() to set (or remove, if value is discarded)
  json value;
  const char* path;
  const char* message;  // substring of the message
};

std::ostream& operator<<(std::ostream& out, const InvalidCase& c) { return out << c.name; }

class InvalidModelTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(InvalidModelTest, IsRejectedWithItsPath) {
  const InvalidCase& c = GetParam();
  json model = BaseModel();
  const json::json_pointer pointer(c.pointer);
  if (c.value.is_discarded()) {
    model[pointer.parent_pointer()].erase(pointer.back());
  } else {
    model[pointer] = c.value;
  }
  ModelDiagnostics diagnostics;
  auto parsed = Parse(model, &diagnostics);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(common::FieldOf(parsed.status()), c.path);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.message));
  ASSERT_EQ(diagnostics.errors.size(), 1U) << diagnostics.errors[1].ToString();
  EXPECT_EQ(diagnostics.errors[0].path, c.path);
}

const json kRemove = json::value_t::discarded;

INSTANTIATE_TEST_SUITE_P(
    Cases, InvalidModelTest,
    ::testing::Values(
        InvalidCase{"missing_services", "/service_capabilities", kRemove, "service_capabilities",
                    "required"},
        InvalidCase{"services_not_array", "/service_capabilities", json::object(),
                    "service_capabilities", "must be an array"},
        InvalidCase{"service_not_object", "/service_capabilities/0", 5, "service_capabilities[0]",
                    "must be an object"},
        InvalidCase{"name_not_string", "/name", 5, "name", "must be a string"},
        InvalidCase{"missing_service_id", "/service_capabilities/0/service_id", kRemove,
                    "service_capabilities[0].service_id", "required"},
        InvalidCase{"empty_service_id", "/service_capabilities/0/service_id", "",
                    "service_capabilities[0].service_id", "must not be empty"},
        InvalidCase{"long_service_id", "/service_capabilities/0/service_id", std::string(65, 'x'),
                    "service_capabilities[0].service_id", "longer than 64 characters"},
        InvalidCase{"missing_property_name", "/service_capabilities/0/properties/1/property_name",
                    kRemove, "service_capabilities[0].properties[1].property_name", "required"},
        InvalidCase{"empty_property_name", "/service_capabilities/0/properties/0/property_name", "",
                    "service_capabilities[0].properties[0].property_name", "must not be empty"},
        InvalidCase{"missing_command_name", "/service_capabilities/0/commands/0/command_name",
                    kRemove, "service_capabilities[0].commands[0].command_name", "required"},
        InvalidCase{"missing_para_name", "/service_capabilities/0/commands/0/paras/0/para_name",
                    kRemove, "service_capabilities[0].commands[0].paras[0].para_name", "required"},
        InvalidCase{"missing_response_para_name",
                    "/service_capabilities/0/commands/0/responses/0/paras/0/para_name", "",
                    "service_capabilities[0].commands[0].responses[0].paras[0].para_name",
                    "must not be empty"},
        InvalidCase{"missing_event_type", "/service_capabilities/0/events/0/event_type", kRemove,
                    "service_capabilities[0].events[0].event_type", "required"},
        InvalidCase{"missing_event_para_name", "/service_capabilities/0/events/0/paras/0/para_name",
                    kRemove, "service_capabilities[0].events[0].paras[0].para_name", "required"},
        InvalidCase{"unknown_data_type", "/service_capabilities/0/properties/0/data_type", "float",
                    "service_capabilities[0].properties[0].data_type",
                    "unknown data_type 'float' (allowed: int, long, decimal, string, DateTime, "
                    "jsonObject, enum, boolean, string list)"},
        InvalidCase{"data_type_wrong_case", "/service_capabilities/0/properties/0/data_type",
                    "datetime", "service_capabilities[0].properties[0].data_type",
                    "unknown data_type"},
        InvalidCase{"missing_data_type", "/service_capabilities/0/properties/0/data_type", kRemove,
                    "service_capabilities[0].properties[0].data_type", "required"},
        InvalidCase{"min_above_max", "/service_capabilities/0/properties/0/min", "11",
                    "service_capabilities[0].properties[0].max", "min (11) > max (10)"},
        InvalidCase{"min_not_numeric", "/service_capabilities/0/properties/0/min", "ten",
                    "service_capabilities[0].properties[0].min", "not numeric: 'ten'"},
        InvalidCase{"max_not_numeric", "/service_capabilities/0/properties/0/max", true,
                    "service_capabilities[0].properties[0].max",
                    "must be a number or a numeric string"},
        InvalidCase{"step_zero", "/service_capabilities/0/properties/0/step", "0",
                    "service_capabilities[0].properties[0].step", "must be > 0 (got 0)"},
        InvalidCase{"step_negative", "/service_capabilities/0/events/0/paras/0/step", -0.5,
                    "service_capabilities[0].events[0].paras[0].step", "must be > 0 (got -0.5)"},
        InvalidCase{"step_not_numeric", "/service_capabilities/0/properties/0/step", "x",
                    "service_capabilities[0].properties[0].step", "not numeric"},
        InvalidCase{"max_length_negative", "/service_capabilities/0/properties/1/max_length", -1,
                    "service_capabilities[0].properties[1].max_length",
                    "must not be negative (got -1)"},
        InvalidCase{"max_length_not_integer", "/service_capabilities/0/properties/1/max_length",
                    "long", "service_capabilities[0].properties[1].max_length",
                    "must be a non-negative integer"},
        InvalidCase{"enum_without_list", "/service_capabilities/0/properties/1/data_type", "enum",
                    "service_capabilities[0].properties[1].enum_list",
                    "data_type enum needs a non-empty enum_list"},
        InvalidCase{"enum_with_empty_list", "/service_capabilities/0/properties/1",
                    json{{"property_name", "q"},
                         {"data_type", "enum"},
                         {"enum_list", json::array()},
                         {"method", "R"}},
                    "service_capabilities[0].properties[1].enum_list", "non-empty enum_list"},
        InvalidCase{"enum_list_not_strings", "/service_capabilities/0/properties/1/enum_list",
                    json::array({"a", 1}), "service_capabilities[0].properties[1].enum_list[1]",
                    "must be a string"},
        InvalidCase{"enum_list_not_array", "/service_capabilities/0/properties/1/enum_list", "a,b",
                    "service_capabilities[0].properties[1].enum_list",
                    "must be an array of strings"},
        InvalidCase{"duplicate_service_id", "/service_capabilities/1",
                    json{{"service_id", "s"}, {"properties", json::array()}},
                    "service_capabilities[1].service_id",
                    "duplicate service_id 's' (also service_capabilities[0])"},
        InvalidCase{"duplicate_property", "/service_capabilities/0/properties/1/property_name", "p",
                    "service_capabilities[0].properties[1].property_name",
                    "duplicate property_name 'p'"},
        InvalidCase{"duplicate_command", "/service_capabilities/0/commands/1",
                    json{{"command_name", "c"}}, "service_capabilities[0].commands[1].command_name",
                    "duplicate command_name 'c'"},
        InvalidCase{"duplicate_para", "/service_capabilities/0/commands/0/paras/1",
                    json{{"para_name", "x"}, {"data_type", "string"}},
                    "service_capabilities[0].commands[0].paras[1].para_name",
                    "duplicate para_name 'x'"},
        InvalidCase{"duplicate_event", "/service_capabilities/0/events/1",
                    json{{"event_type", "e"}}, "service_capabilities[0].events[1].event_type",
                    "duplicate event_type 'e'"},
        InvalidCase{"bad_method_letter", "/service_capabilities/0/properties/0/method", "RX",
                    "service_capabilities[0].properties[0].method", "bad method 'RX'"},
        InvalidCase{"repeated_method_letter", "/service_capabilities/0/properties/0/method", "RR",
                    "service_capabilities[0].properties[0].method", "bad method 'RR'"},
        InvalidCase{"lowercase_method", "/service_capabilities/0/properties/0/method", "rw",
                    "service_capabilities[0].properties[0].method", "bad method 'rw'"},
        InvalidCase{"empty_method", "/service_capabilities/0/properties/0/method", "",
                    "service_capabilities[0].properties[0].method", "bad method ''"},
        InvalidCase{"required_not_bool", "/service_capabilities/0/properties/0/required", "yes",
                    "service_capabilities[0].properties[0].required", "must be a boolean"},
        InvalidCase{"properties_not_array", "/service_capabilities/0/properties", json::object(),
                    "service_capabilities[0].properties", "must be an array"},
        InvalidCase{"property_not_object", "/service_capabilities/0/properties/0", "p",
                    "service_capabilities[0].properties[0]", "must be an object"}),
    [](const ::testing::TestParamInfo<InvalidCase>& param_info) {
      return std::string(param_info.param.name);
    });

TEST(ProductModelTest, NamesTheExactPathOfMinAboveMax) {
  json model = BaseModel();
  model["service_capabilities"][1] = {{"service_id", "t"}};
  model["service_capabilities"][2] = {
      {"service_id", "u"},
      {"properties",
       {{{"property_name", "v"}, {"data_type", "decimal"}, {"min", 10}, {"max", "5"}}}}};
  auto parsed = Parse(model);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().message(),
            "service_capabilities[2].properties[0].max: min (10) > max (5)");
  EXPECT_EQ(common::FieldOf(parsed.status()), "service_capabilities[2].properties[0].max");
}

TEST(ProductModelTest, RejectsDocumentsThatAreNotModels) {
  for (const char* text : {"", "{", "nope", "[1,2]", "42", "\"x\"", "{\"a\":1} extra", "null"}) {
    ModelDiagnostics diagnostics;
    auto parsed = ParseProductModel(text, &diagnostics);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    ASSERT_EQ(diagnostics.errors.size(), 1U) << text;
    EXPECT_EQ(diagnostics.errors[0].path, "") << text;
  }
  EXPECT_THAT(std::string(ParseProductModel("{").status().message()), HasSubstr("not valid JSON"));
  EXPECT_THAT(std::string(ParseProductModel("[]").status().message()),
              HasSubstr("must be a JSON object"));
}

TEST(ProductModelTest, ReturnsEveryErrorAtOnce) {
  json model = BaseModel();
  model["service_capabilities"][0]["properties"][0]["data_type"] = "float";
  model["service_capabilities"][0]["properties"][1]["method"] = "X";
  model["service_capabilities"][0]["commands"][0]["command_name"] = "";
  ModelDiagnostics diagnostics;
  auto parsed = Parse(model, &diagnostics);
  ASSERT_FALSE(parsed.ok());
  ASSERT_EQ(diagnostics.errors.size(), 3U);
  EXPECT_EQ(diagnostics.errors[0].path, "service_capabilities[0].properties[0].data_type");
  EXPECT_EQ(diagnostics.errors[1].path, "service_capabilities[0].properties[1].method");
  EXPECT_EQ(diagnostics.errors[2].path, "service_capabilities[0].commands[0].command_name");
  EXPECT_THAT(std::string(parsed.status().message()),
              ::testing::StartsWith("service_capabilities[0].properties[0].data_type: unknown "
                                    "data_type 'float'"));
  EXPECT_THAT(std::string(parsed.status().message()), ::testing::EndsWith("(and 2 more errors)"));
}

TEST(ProductModelTest, CapsTheErrorList) {
  json model = BaseModel();
  json& properties = model["service_capabilities"][0]["properties"];
  properties = json::array();
  for (int k = 0; k < 150; ++k) {
    properties.push_back({{"property_name", "p" + std::to_string(k)}, {"data_type", "bad"}});
  }
  ModelDiagnostics diagnostics;
  auto parsed = Parse(model, &diagnostics);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(diagnostics.errors.size(), kMaxModelErrors);
  EXPECT_EQ(diagnostics.dropped_errors, 50U);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("(and 149 more errors)"));
}

TEST(ProductModelTest, EnforcesIotdaLimits) {
  {
    json model = BaseModel();
    json& services = model["service_capabilities"];
    for (std::size_t k = 1; k <= kMaxServices; ++k) {
      services.push_back({{"service_id", "s" + std::to_string(k)}});
    }
    auto parsed = Parse(model);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().message(), "service_capabilities: too many services (501 > 500)");
  }
  {
    json model = BaseModel();
    json& properties = model["service_capabilities"][0]["properties"];
    for (std::size_t k = 2; k <= kMaxPropertiesPerService; ++k) {
      properties.push_back({{"property_name", "n" + std::to_string(k)}, {"data_type", "int"}});
    }
    auto parsed = Parse(model);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().message(),
              "service_capabilities[0].properties: too many properties (501 > 500)");
    properties.erase(properties.size() - 1);
    EXPECT_TRUE(Parse(model).ok());
  }
  {
    json model = BaseModel();
    model["description"] = std::string(kMaxModelBytes, 'x');
    auto parsed = Parse(model);
    ASSERT_FALSE(parsed.ok());
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("too large"));
  }
  {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    auto parsed = ParseProductModel(deep);
    ASSERT_FALSE(parsed.ok());
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("nested deeper than 64"));
  }
}

TEST(ProductModelTest, IsLenientWhereIotdaIs) {
  json model = BaseModel();
  json& p = model["service_capabilities"][0]["properties"];
  p[0]["max_length"] = 10;                                  // on an int: ignored
  p[0]["enum_list"] = json::array({"1"});                   // on an int: ignored
  p[0]["step"] = "1";                                       // a numeric string
  p[0]["unit"] = nullptr;                                   // nulls are absent
  p[1]["min"] = "abc";                                      // limits on a string: ignored
  p[1]["enum_list"] = json::array();                        // no constraint
  p[1].erase("method");                                     // defaults to R
  p[1]["default_value"] = 5;                                // wrong type: a warning only
  model["service_capabilities"][0]["option"] = "Whatever";  // informational
  model["service_capabilities"][0]["x-vendor"] = {{"anything", true}};
  ModelDiagnostics diagnostics;
  auto parsed = Parse(model, &diagnostics);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(diagnostics.warnings.size(), 6U);
  const Parameter* q = parsed->FindService("s")->properties.Find("q");
  EXPECT_EQ(q->method, kMethodRead);
  EXPECT_TRUE(q->enum_list.empty());
  const Parameter* pp = parsed->FindService("s")->properties.Find("p");
  EXPECT_FALSE(pp->max_length);
  EXPECT_EQ(pp->step->integer, 1);
}

TEST(ProductModelTest, ComparesIntegerLimitsExactly) {
  json model = BaseModel();
  json& p = model["service_capabilities"][0]["properties"][0];
  p["data_type"] = "long";
  p["min"] = "9223372036854775806";
  p["max"] = 9223372036854775807LL;
  auto parsed = Parse(model);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const Parameter* param = parsed->FindService("s")->properties.Find("p");
  EXPECT_EQ(param->min->integer, 9223372036854775806LL);
  EXPECT_EQ(param->max->integer, 9223372036854775807LL);
  p["min"] = "9223372036854775807";
  p["max"] = "9223372036854775806";
  EXPECT_FALSE(Parse(model).ok());
}

// Random mutations of real models: parsing never throws or crashes, and a model that parses is
// usable.
TEST(ProductModelTest, SurvivesRandomMutations) {
  const std::string seeds[] = {ReadTestdata("smart_meter.json"), ReadTestdata("iotda_export.json")};
  const std::string alphabet = "{}[]:,\"\\ 0123456789.-eEtruefalsnRWE\xff\xc3\xa9";
  std::mt19937 rng(7);
  const char* env = std::getenv("IOT_FUZZ_ITERATIONS");
  const int iterations = env != nullptr ? std::atoi(env) / 10 : 3000;
  int parsed_ok = 0;
  for (int iteration = 0; iteration < iterations; ++iteration) {
    std::string text = seeds[rng() % 2];
    for (int e = 0; e < 1 + static_cast<int>(rng() % 3); ++e) {
      const std::size_t pos = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          text.insert(pos, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          text.erase(pos, 1 + rng() % 4);
          break;
      }
    }
    ModelDiagnostics diagnostics;
    auto parsed = ParseProductModel(text, &diagnostics);
    if (parsed.ok()) {
      ++parsed_ok;
      ASSERT_TRUE(diagnostics.errors.empty());
      ASSERT_NE(parsed->model, nullptr);
      for (const Service& service : parsed->services()) {
        ASSERT_EQ(parsed->FindService(service.service_id), &service);
      }
    } else {
      ASSERT_FALSE(diagnostics.errors.empty());
      ASSERT_EQ(common::FieldOf(parsed.status()), diagnostics.errors[0].path);
    }
  }
  EXPECT_GT(parsed_ok, 0);
}

}  // namespace
}  // namespace iot::thing_model
