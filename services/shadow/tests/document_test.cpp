// The shadow document's pure logic: event times, delta, and the Redis / PostgreSQL encodings.
#include "iot/shadow/document.h"

#include <gtest/gtest.h>

#include "iot/common/status.h"

namespace iot::shadow {
namespace {

using nlohmann::json;

TEST(EventTime, ParsesIotdaAndIso8601) {
  EXPECT_EQ(ParseEventTime("19700101T000001Z"), 1000);
  EXPECT_EQ(ParseEventTime("20261126T174248Z"), ParseEventTime("2026-11-26T17:42:48Z"));
  EXPECT_EQ(ParseEventTime("2026-11-26T17:42:48.123Z"),
            *ParseEventTime("2026-11-26T17:42:48Z") + 123);
  EXPECT_EQ(ParseEventTime("2026-11-26T19:42:48+02:00"), ParseEventTime("2026-11-26T17:42:48Z"));
  EXPECT_EQ(IotdaTime(*ParseEventTime("20261126T174248Z")), "20261126T174248Z");
  EXPECT_EQ(Rfc3339Time(1500), "1970-01-01T00:00:01.500Z");
  for (const char* bad : {"", "20261126", "20261326T000000Z", "20260230T000000Z",
                          "2026-11-26T17:42:48", "2026-11-26 17:42:48Z", "2026-11-26T25:00:00Z",
                          "2026-11-26T17:42:48.Z", "yyyyMMddTHHmmssZ"}) {
    EXPECT_FALSE(ParseEventTime(bad).has_value()) << bad;
  }
}

TEST(Delta, IsDesiredThatDiffersFromReportedNumbersByValue) {
  ServiceShadow service;
  service.desired.properties["a"] = {json(60), 1};
  service.desired.properties["b"] = {json("OFF"), 1};
  service.desired.properties["c"] = {json(1.5), 1};
  service.reported.properties["a"] = {json(60.0), 2};
  service.reported.properties["b"] = {json("ON"), 2};
  service.reported.properties["d"] = {json(7), 2};
  EXPECT_EQ(Delta(service), json({{"b", "OFF"}, {"c", 1.5}}));

  DeviceShadow shadow;
  shadow.device_id = "dev";
  shadow.services["meter"] = service;
  shadow.services["empty"] = {};
  EXPECT_EQ(*PropertySetBody(shadow),
            json({{"object_device_id", "dev"},
                  {"services", {{{"service_id", "meter"}, {"properties", Delta(service)}}}}}));
  shadow.services["meter"].reported.properties["b"] = {json("OFF"), 3};
  shadow.services["meter"].reported.properties["c"] = {json(1.5), 3};
  EXPECT_FALSE(PropertySetBody(shadow).has_value());
}

DeviceShadow Sample() {
  DeviceShadow shadow;
  shadow.device_id = "dev";
  shadow.tenant_id = "t1";
  shadow.version = 7;
  ServiceShadow& meter = shadow.services["meter"];
  meter.reported.properties["voltage"] = {json(230.5), 1000};
  meter.reported.properties["tags"] = {json({"a", "b"}), 2000};
  meter.reported.event_ms = 2000;
  meter.reported.event_time = IotdaTime(2000);
  meter.desired.properties["relay_state"] = {json("OFF"), 3000};
  meter.desired.event_ms = 3000;
  meter.desired.event_time = IotdaTime(3000);
  return shadow;
}

TEST(Encoding, RedisHashRoundTrips) {
  const DeviceShadow shadow = Sample();
  std::vector<std::pair<std::string, std::string>> hash = {{"v", "7"}, {"t", "t1"}, {"w", "3"}};
  for (const auto& [id, service] : shadow.services) {
    AppendSideFields(id, service.reported, false, hash);
    AppendSideFields(id, service.desired, true, hash);
  }
  hash.emplace_back("ps", PropertySetToJson({"shadow-1", 0, "success", 5000}).dump());
  hash.emplace_back(std::string("r\0broken", 8), "not stamped");  // skipped
  const DeviceShadow decoded = DecodeHash("dev", hash);
  EXPECT_TRUE(decoded.exists);
  EXPECT_EQ(decoded.version, 7);
  EXPECT_EQ(decoded.write_seq, 3);
  EXPECT_EQ(decoded.tenant_id, "t1");
  ASSERT_TRUE(decoded.last_property_set.has_value());
  EXPECT_EQ(decoded.last_property_set->request_id, "shadow-1");
  const ServiceShadow& meter = decoded.services.at("meter");
  EXPECT_EQ(meter.reported.properties.at("voltage").value, json(230.5));
  EXPECT_EQ(meter.reported.properties.at("voltage").time_ms, 1000);
  EXPECT_EQ(meter.reported.properties.at("tags").value, json({"a", "b"}));
  EXPECT_EQ(meter.reported.event_time, IotdaTime(2000));
  EXPECT_EQ(meter.desired.properties.at("relay_state").value, json("OFF"));
  EXPECT_EQ(decoded.services.size(), 1U);
  EXPECT_FALSE(DecodeHash("dev", {}).exists);
}

TEST(Encoding, DurableJsonRoundTrips) {
  const DeviceShadow shadow = Sample();
  std::map<std::string, ServiceShadow> back;
  SideFromJson(SideToJson(shadow.services, false), false, back);
  SideFromJson(SideToJson(shadow.services, true), true, back);
  const ServiceShadow& meter = back.at("meter");
  EXPECT_EQ(meter.reported.properties.at("voltage").time_ms, 1000);
  EXPECT_EQ(meter.reported.event_ms, 2000);
  EXPECT_EQ(meter.desired.properties.at("relay_state").value, json("OFF"));
  SideFromJson(json::parse(R"({"x":5,"y":{"properties":3}})"), false, back);  // ignored
  EXPECT_EQ(back.count("x"), 0U);
}

TEST(DeviceGet, HasTheIotdaShape) {
  const json body = DeviceGetResponse(Sample(), "");
  EXPECT_EQ(body, json::parse(R"({"object_device_id":"dev","shadow":[{"service_id":"meter",
      "desired":{"properties":{"relay_state":"OFF"},"event_time":"19700101T000003Z"},
      "reported":{"properties":{"tags":["a","b"],"voltage":230.5},
                  "event_time":"19700101T000002Z"},
      "version":7}]})"));
  EXPECT_TRUE(DeviceGetResponse(Sample(), "other")["shadow"].empty());
}

TEST(Keys, DotDollarAndNulAreRefused) {
  EXPECT_TRUE(CheckKey("f", "relay_state").ok());
  for (const std::string& bad :
       {std::string("a.b"), std::string("$x"), std::string("a\0b", 3), std::string()}) {
    const absl::Status status = CheckKey("shadow[0].desired.k", bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(common::FieldOf(status), "shadow[0].desired.k");
  }
}

}  // namespace
}  // namespace iot::shadow
