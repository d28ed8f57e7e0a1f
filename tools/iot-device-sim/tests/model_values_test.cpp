// The simulated devices' values (DeviceValues): settings keep what a property set gave them,
// identity properties never change, measurements drift within their range in small steps,
// counters never go back, and every report still validates against the product model.
#include "model_values.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "iot/thing_model/product_model.h"
#include "iot/thing_model/validator.h"

namespace devsim {
namespace {

using iot::thing_model::ProductModel;
using Json = nlohmann::json;

std::shared_ptr<const ProductModel> Parse(const std::string& json) {
  auto parsed = iot::thing_model::ParseProductModel(json);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return std::make_shared<const ProductModel>(std::move(*parsed));
}

std::shared_ptr<const ProductModel> SmartMeter() {
  std::ifstream in(std::string(IOT_TESTDATA_DIR) + "/smart_meter_product.json");
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str());
}

/// A model of one service "s" with the given properties (IoTDA JSON).
std::shared_ptr<const ProductModel> ModelWith(const Json& properties) {
  return Parse(Json{{"product_id", "p1"},
                    {"name", "test"},
                    {"service_capabilities", {{{"service_id", "s"}, {"properties", properties}}}}}
                   .dump());
}

const iot::thing_model::Parameter& Property(const ProductModel& model, const std::string& name) {
  return *model.services().front().properties.Find(name);
}

TEST(ClassifyTest, SmartMeterProperties) {
  const auto model = SmartMeter();
  EXPECT_EQ(Classify(Property(*model, "voltage")), ValueKind::kMeasurement);
  EXPECT_EQ(Classify(Property(*model, "current")), ValueKind::kMeasurement);
  EXPECT_EQ(Classify(Property(*model, "total_energy")), ValueKind::kCounter);
  EXPECT_EQ(Classify(Property(*model, "relay_state")), ValueKind::kSetting);
  EXPECT_EQ(Classify(Property(*model, "report_interval")), ValueKind::kSetting);
  EXPECT_EQ(Classify(Property(*model, "serial")), ValueKind::kIdentity);
  EXPECT_EQ(Classify(Property(*model, "firmware")), ValueKind::kIdentity);
  EXPECT_EQ(Classify(Property(*model, "installed_at")), ValueKind::kState);
  EXPECT_EQ(Classify(Property(*model, "online")), ValueKind::kState);
  EXPECT_EQ(Classify(Property(*model, "location")), ValueKind::kState);
}

TEST(ClassifyTest, NamesAndTypes) {
  const auto model = ModelWith(Json::array({
      {{"property_name", "Device_ID"}, {"data_type", "string"}, {"method", "R"}},
      {{"property_name", "imei"}, {"data_type", "long"}, {"method", "R"}},
      {{"property_name", "hwVersion"}, {"data_type", "string"}, {"method", "R"}},
      {{"property_name", "uptime"}, {"data_type", "long"}, {"method", "R"}},
      {{"property_name", "packet_count"}, {"data_type", "int"}, {"method", "R"}},
      {{"property_name", "temperature"}, {"data_type", "decimal"}, {"method", "R"}},
      {{"property_name", "status"},
       {"data_type", "enum"},
       {"enum_list", {"idle", "busy"}},
       {"method", "R"}},
      {{"property_name", "target_total"}, {"data_type", "int"}, {"method", "RW"}},
      {{"property_name", "machine_temp"}, {"data_type", "decimal"}, {"method", "R"}},
      {{"property_name", "serialNumber"}, {"data_type", "long"}, {"method", "R"}},
      {{"property_name", "accounting_level"}, {"data_type", "int"}, {"method", "R"}},
  }));
  EXPECT_EQ(Classify(Property(*model, "Device_ID")), ValueKind::kIdentity);
  EXPECT_EQ(Classify(Property(*model, "imei")), ValueKind::kIdentity);
  EXPECT_EQ(Classify(Property(*model, "hwVersion")), ValueKind::kIdentity);
  EXPECT_EQ(Classify(Property(*model, "uptime")), ValueKind::kCounter);
  EXPECT_EQ(Classify(Property(*model, "packet_count")), ValueKind::kCounter);
  EXPECT_EQ(Classify(Property(*model, "temperature")), ValueKind::kMeasurement);
  EXPECT_EQ(Classify(Property(*model, "status")), ValueKind::kState);
  // Writable wins over the name: a setting is what the platform last set.
  EXPECT_EQ(Classify(Property(*model, "target_total")), ValueKind::kSetting);
  // Whole words only: "machine" has no "mac", "accounting" no "count".
  EXPECT_EQ(Classify(Property(*model, "machine_temp")), ValueKind::kMeasurement);
  EXPECT_EQ(Classify(Property(*model, "serialNumber")), ValueKind::kIdentity);
  EXPECT_EQ(Classify(Property(*model, "accounting_level")), ValueKind::kMeasurement);
}

TEST(DeviceValuesTest, IdentityAndStateNeverChange) {
  std::mt19937_64 rng(7);
  DeviceValues values(SmartMeter(), 5, "report_interval", rng);
  const Json first = values.Readable("meter");
  for (int i = 0; i < 1000; ++i) {
    values.Advance(rng);
  }
  const Json later = values.Readable("meter");
  for (const char* name : {"serial", "firmware", "installed_at", "location", "online", "tags",
                           "relay_state", "report_interval"}) {
    EXPECT_EQ(later[name], first[name]) << name;
  }
}

TEST(DeviceValuesTest, MeasurementsDriftInSmallStepsWithinTheirRange) {
  std::mt19937_64 rng(11);
  DeviceValues values(SmartMeter(), 5, "report_interval", rng);
  double voltage = values.Get("meter", "voltage").get<double>();
  // Starts in the middle fifth of 0..480 V.
  EXPECT_GE(voltage, 0.4 * 480 - 0.01);
  EXPECT_LE(voltage, 0.6 * 480 + 0.01);
  int changes = 0;
  for (int i = 0; i < 2000; ++i) {
    values.Advance(rng);
    const double next = values.Get("meter", "voltage").get<double>();
    EXPECT_GE(next, 0.0);
    EXPECT_LE(next, 480.0);
    // At most 1% of the range per report (plus the step's rounding), never the old 48 V to
    // 256 V jumps.
    EXPECT_LE(std::abs(next - voltage), 4.8 + 0.1) << "report " << i;
    changes += next != voltage ? 1 : 0;
    voltage = next;
    // The model's step (0.1 V) is kept.
    EXPECT_NEAR(std::round(next * 10) / 10, next, 1e-9);
  }
  EXPECT_GT(changes, 1000) << "a measurement that never moves is not a measurement";
}

TEST(DeviceValuesTest, CountersNeverGoBack) {
  std::mt19937_64 rng(13);
  DeviceValues values(SmartMeter(), 5, "report_interval", rng);
  const double start = values.Get("meter", "total_energy").get<double>();
  // Starts in the lowest hundredth of 0..99999999 kWh.
  EXPECT_LE(start, 999999.99 + 0.01);
  double energy = start;
  for (int i = 0; i < 1000; ++i) {
    values.Advance(rng);
    const double next = values.Get("meter", "total_energy").get<double>();
    EXPECT_GE(next, energy) << "report " << i;
    energy = next;
  }
  EXPECT_GT(energy, start);
}

TEST(DeviceValuesTest, IntegerCountersStayIntegersAndStopAtMax) {
  const auto model = ModelWith(Json::array({
      {{"property_name", "count"}, {"data_type", "int"}, {"min", 0}, {"max", 3}, {"method", "R"}},
  }));
  std::mt19937_64 rng(17);
  DeviceValues values(model, 5, "", rng);
  for (int i = 0; i < 200; ++i) {
    values.Advance(rng);
    const Json count = values.Get("s", "count");
    ASSERT_TRUE(count.is_number_integer()) << count;
    EXPECT_LE(count.get<int>(), 3);
  }
  EXPECT_EQ(values.Get("s", "count"), 3);
}

TEST(DeviceValuesTest, APropertySetIsKept) {
  std::mt19937_64 rng(19);
  DeviceValues values(SmartMeter(), 5, "report_interval", rng);
  EXPECT_EQ(values.Get("meter", "relay_state"), "ON") << "the model's default_value";
  EXPECT_EQ(values.Set("meter", Json{{"relay_state", "OFF"}, {"report_interval", 60}}), 2u);
  // A readable-only value set by the platform (property set of command-dispatch) stops drifting.
  EXPECT_EQ(values.Set("meter", Json{{"voltage", 230.5}}), 1u);
  for (int i = 0; i < 500; ++i) {
    values.Advance(rng);
  }
  const Json report = values.Readable("meter");
  EXPECT_EQ(report["relay_state"], "OFF");
  EXPECT_EQ(report["report_interval"], 60);
  EXPECT_EQ(report["voltage"], 230.5);
}

TEST(DeviceValuesTest, UnknownNamesAndServicesAreIgnored) {
  std::mt19937_64 rng(23);
  DeviceValues values(SmartMeter(), 5, "report_interval", rng);
  EXPECT_EQ(values.Set("meter", Json{{"bogus", 1}}), 0u);
  EXPECT_EQ(values.Set("nope", Json{{"relay_state", "OFF"}}), 0u);
  EXPECT_EQ(values.Set("meter", Json::array()), 0u);
  EXPECT_FALSE(values.Readable("meter").contains("bogus"));
  EXPECT_TRUE(values.Readable("nope").empty());
  EXPECT_TRUE(values.Get("meter", "bogus").is_null());
}

TEST(DeviceValuesTest, TheIntervalPropertyStartsAsTheRealInterval) {
  std::mt19937_64 rng(29);
  EXPECT_EQ(DeviceValues(SmartMeter(), 5, "report_interval", rng).Get("meter", "report_interval"),
            5);
  // Clamped to the model's range (min 1).
  EXPECT_EQ(
      DeviceValues(SmartMeter(), 0.05, "report_interval", rng).Get("meter", "report_interval"), 1);
  // Without it: any value of the range, once.
  const Json other = DeviceValues(SmartMeter(), 5, "", rng).Get("meter", "report_interval");
  ASSERT_TRUE(other.is_number_integer());
  EXPECT_GE(other.get<int>(), 1);
  EXPECT_LE(other.get<int>(), 3600);
}

TEST(DeviceValuesTest, ReportsValidateAgainstTheModel) {
  const auto model = SmartMeter();
  const iot::thing_model::Validator validator(model->model);
  std::mt19937_64 rng(31);
  DeviceValues values(model, 5, "report_interval", rng);
  for (int i = 0; i < 300; ++i) {
    const std::string report =
        Json{{"services", {{{"service_id", "meter"}, {"properties", values.Readable("meter")}}}}}
            .dump();
    const auto result = validator.ValidateReport(std::string_view(report));
    ASSERT_TRUE(result.ok()) << report << "\n" << result.errors[0].ToString();
    values.Advance(rng);
  }
}

TEST(DeviceValuesTest, WideIntegerRangesDoNotOverflow) {
  const auto model = ModelWith(Json::array({
      {{"property_name", "level"},
       {"data_type", "long"},
       {"min", "-9223372036854775808"},
       {"max", "9223372036854775807"},
       {"method", "R"}},
  }));
  std::mt19937_64 rng(37);
  DeviceValues values(model, 5, "", rng);
  for (int i = 0; i < 200; ++i) {
    values.Advance(rng);
    ASSERT_TRUE(values.Get("s", "level").is_number_integer()) << values.Get("s", "level");
  }
}

TEST(DeviceValuesTest, SameSeedSameDevice) {
  std::mt19937_64 a(41);
  std::mt19937_64 b(41);
  DeviceValues one(SmartMeter(), 5, "report_interval", a);
  DeviceValues two(SmartMeter(), 5, "report_interval", b);
  for (int i = 0; i < 50; ++i) {
    one.Advance(a);
    two.Advance(b);
  }
  EXPECT_EQ(one.Readable("meter"), two.Readable("meter"));
}

}  // namespace
}  // namespace devsim
