// The Alink dialect of the gateway's uplink: topics, the codec, and what UplinkProcessor makes of
// each Alibaba function (records, reports, responses, the `_reply` it queues) for a device of an
// Alink product, as AdmitUplink hands it over from the broker's relay topic.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "iot/common/crypto.h"
#include "iot/device_gateway/alink/uplink_codec.h"
#include "iot/device_gateway/processor.h"
#include "processor_test_util.h"

namespace iot::device_gateway {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

/// A TSL as the registry maps it: the default function block is service `default`, the custom
/// block `lamp` its own service; bool → boolean, enum → enum of its keys, date → string.
constexpr std::string_view kModel = R"({
  "product_id": "pk", "name": "Alink thing", "device_type": "Thing", "protocol_type": "MQTT",
  "data_format": "json", "manufacturer_name": "Acme",
  "service_capabilities": [{
    "service_id": "default",
    "properties": [
      {"property_name": "temperature", "data_type": "decimal", "min": "-40", "max": "120", "method": "R"},
      {"property_name": "switch", "data_type": "boolean", "method": "RW"},
      {"property_name": "mode", "data_type": "enum", "enum_list": ["0", "1", "2"], "method": "RW"},
      {"property_name": "birthday", "data_type": "string", "max_length": 20, "method": "R"}
    ],
    "commands": [],
    "events": [{"event_type": "alarm",
                "paras": [{"para_name": "level", "data_type": "int", "min": "0", "max": "5"},
                          {"para_name": "on", "data_type": "boolean"}]}]
  }, {
    "service_id": "lamp",
    "properties": [{"property_name": "brightness", "data_type": "int", "min": "0", "max": "100", "method": "RW"}],
    "commands": [],
    "events": [{"event_type": "fault", "paras": [{"para_name": "code", "data_type": "int"}]}]
  }]
})";

/// The Node SDK's ids: the reply topic in the id, matched on reply.
constexpr std::string_view kNodeId = "1|exp-topic|/sys/pk/dn/thing/event/property/post_reply";

class FakeRegistry final : public DeviceContextSource {
 public:
  absl::StatusOr<DeviceContextData> GetDeviceContext(const std::string& device_id) override {
    const bool alink = device_id == "pk_dn";
    return DeviceContextData{.device_id = device_id,
                             .tenant_id = "t1",
                             .product_id = "pk",
                             .node_id = device_id.substr(3),
                             .dialect = alink ? "alink" : "",
                             .model_version = 1,
                             .product_json = std::string(kModel)};
  }
};

TEST(AlinkTopicTest, ClassifiesEveryFunctionOfTheDevice) {
  struct Case {
    std::string topic;
    AlinkFunction function;
    std::string identifier;
    std::string message_id;
  };
  const std::vector<Case> cases = {
      {"/sys/pk/dn/thing/event/property/post", AlinkFunction::kPropertyPost, "", ""},
      {"/sys/pk/dn/thing/event/property/batch/post", AlinkFunction::kPropertyBatchPost, "", ""},
      {"/sys/pk/dn/thing/event/alarm/post", AlinkFunction::kEventPost, "alarm", ""},
      {"/sys/pk/dn/thing/event/lamp:fault/post", AlinkFunction::kEventPost, "lamp:fault", ""},
      {"/sys/pk/dn/thing/model/up_raw", AlinkFunction::kRawUp, "", ""},
      {"/sys/pk/dn/thing/model/down_raw_reply", AlinkFunction::kDownRawReply, "", ""},
      {"/pk/dn/user/a/b", AlinkFunction::kCustom, "", ""},
      {"/shadow/update/pk/dn", AlinkFunction::kShadowUpdate, "", ""},
      {"/ext/ntp/pk/dn/request", AlinkFunction::kNtpRequest, "", ""},
      {"/sys/pk/dn/thing/service/property/set_reply", AlinkFunction::kPropertySetReply, "", ""},
      {"/sys/pk/dn/thing/service/property/get_reply", AlinkFunction::kPropertyGetReply, "", ""},
      {"/sys/pk/dn/thing/service/reboot_reply", AlinkFunction::kServiceReply, "reboot", ""},
      {"/sys/pk/dn/rrpc/response/1234", AlinkFunction::kRrpcResponse, "", "1234"},
      {"/ext/rrpc/77/sys/pk/dn/thing/service/reboot", AlinkFunction::kExtRrpcResponse, "reboot",
       "77"},
      {"/sys/pk/dn/thing/deviceinfo/update", AlinkFunction::kUnsupported, "", ""},
      // LinkSDK 4.x appends a request id: tolerated even if the broker left it.
      {"/sys/pk/dn/thing/event/property/post?_rid=123", AlinkFunction::kPropertyPost, "", ""},
      // The broker's grammar (fuzz/topics_fuzz.cpp found both): a `?` outside the last level is
      // part of the topic, and an empty last level below `user/a/` is a custom topic.
      {"/ext/rrpc/98?x/sys/pk/dn/thing/service/reboot", AlinkFunction::kExtRrpcResponse, "reboot",
       "98?x"},
      {"/pk/dn/user/a/", AlinkFunction::kCustom, "", ""},
      {"/pk/dn/user/a?b", AlinkFunction::kCustom, "", ""},
  };
  for (const auto& c : cases) {
    const auto topic = ParseAlinkTopic(c.topic);
    ASSERT_TRUE(topic) << c.topic;
    EXPECT_EQ(topic->function, c.function) << c.topic;
    EXPECT_EQ(topic->product_key, "pk") << c.topic;
    EXPECT_EQ(topic->device_name, "dn") << c.topic;
    EXPECT_EQ(topic->identifier, c.identifier) << c.topic;
    EXPECT_EQ(topic->message_id, c.message_id) << c.topic;
  }
  EXPECT_EQ(ParseAlinkTopic("/sys/pk/dn/thing/event/property/post?_rid=1")->topic,
            "/sys/pk/dn/thing/event/property/post");
  // Only `?_rid=` is LinkSDK's; another query stays in the topic (and names no known function).
  EXPECT_EQ(ParseAlinkTopic("/sys/pk/dn/thing/event/property/post?x=1")->topic,
            "/sys/pk/dn/thing/event/property/post?x=1");
  EXPECT_EQ(ParseAlinkTopic("/sys/pk/dn/thing/event/property/post?x=1")->function,
            AlinkFunction::kUnsupported);
  for (const char* bad : {"", "/", "sys/pk/dn/thing/event/property/post", "/sys//dn/thing/x",
                          "/pk/dn/user/", "/shadow/update/pk", "/ext/ntp/pk/dn",
                          "/ext/rrpc/1/pk/dn/user/x", "/ota/device/inform/pk/dn"}) {
    EXPECT_FALSE(ParseAlinkTopic(bad)) << bad;
  }
}

TEST(AlinkTopicTest, TheMethodComesFromTheTopic) {
  EXPECT_EQ(AlinkMethod(*ParseAlinkTopic("/sys/pk/dn/thing/event/property/post")),
            "thing.event.property.post");
  EXPECT_EQ(AlinkMethod(*ParseAlinkTopic("/sys/pk/dn/thing/event/property/batch/post")),
            "thing.event.property.batch.post");
  EXPECT_EQ(AlinkMethod(*ParseAlinkTopic("/sys/pk/dn/thing/event/lamp:fault/post")),
            "thing.event.lamp:fault.post");
}

TEST(AlinkTopicTest, AdmitUplinkKeepsTheAlibabaTopicAndAppliesTheLimits) {
  RateLimiter limiter(50);
  auto admitted =
      AdmitUplink("iot/up/3/pk_dn/alink/sys/pk/dn/rrpc/response/1234", "{}", {}, limiter, 1000);
  ASSERT_TRUE(std::holds_alternative<UplinkMessage>(admitted));
  const auto& m = std::get<UplinkMessage>(admitted);
  EXPECT_EQ(m.kind, UplinkKind::kAlink);
  EXPECT_EQ(m.device_id, "pk_dn");
  EXPECT_EQ(m.topic, "/sys/pk/dn/rrpc/response/1234");
  EXPECT_EQ(m.request_id, "1234");

  auto unknown = AdmitUplink("iot/up/3/pk_dn/alink/nonsense", "{}", {}, limiter, 1000);
  ASSERT_TRUE(std::holds_alternative<RejectedUplink>(unknown));
  EXPECT_EQ(std::get<RejectedUplink>(unknown).reason, RejectReason::kUnknownTopic);
  EXPECT_EQ(std::get<RejectedUplink>(unknown).topic, "/nonsense");
  EXPECT_EQ(std::get<RejectedUplink>(unknown).device_id, "pk_dn");

  // A property post is a report: the report size limit applies to it, not to a custom topic.
  const UplinkLimits limits{.max_report_bytes = 10};
  auto large = AdmitUplink("iot/up/3/pk_dn/alink/sys/pk/dn/thing/event/property/post",
                           std::string(11, ' '), limits, limiter, 1000);
  ASSERT_TRUE(std::holds_alternative<RejectedUplink>(large));
  EXPECT_EQ(std::get<RejectedUplink>(large).reason, RejectReason::kTooLarge);
  EXPECT_EQ(std::get<RejectedUplink>(large).topic, "/sys/pk/dn/thing/event/property/post");
  EXPECT_TRUE(std::holds_alternative<UplinkMessage>(
      AdmitUplink("iot/up/3/pk_dn/alink/pk/dn/user/x", std::string(11, ' '), limits, limiter, 0)));
}

TEST(AlinkCodecTest, RepliesEchoTheIdExactlyInTheDocumentedOrder) {
  EXPECT_EQ(
      AlinkReply(Json(std::string(kNodeId)), 200, "success", "thing.event.property.post"),
      R"({"id":"1|exp-topic|/sys/pk/dn/thing/event/property/post_reply","code":200,)"
      R"("data":{},"message":"success","method":"thing.event.property.post","version":"1.0"})");
  EXPECT_EQ(AlinkReply(Json(123), 460, "x", ""),
            R"({"id":123,"code":460,"data":{},"message":"x","method":"","version":"1.0"})");
}

TEST(AlinkCodecTest, AnIdIsRecoveredFromAPayloadThatDoesNotParse) {
  bool ack = true;
  EXPECT_EQ(RecoverAlinkId(R"({"id":"7","params":{"a":)", ack), Json("7"));
  EXPECT_TRUE(ack);
  EXPECT_EQ(RecoverAlinkId(R"({"params":{"id":"inner"},"id" : 42,)", ack), Json(42));
  EXPECT_EQ(RecoverAlinkId(R"({"sys":{"ack":0},"id":"9", oops})", ack), Json("9"));
  EXPECT_FALSE(ack);
  EXPECT_FALSE(RecoverAlinkId("not json at all", ack));
  EXPECT_FALSE(RecoverAlinkId(R"({"params":{"id":"inner"}})", ack));
}

TEST(AlinkCodecTest, WireValuesTakeTheModelsTypes) {
  const auto spec = [](thing_model::DataType type) {
    thing_model::Parameter parameter;
    parameter.type = type;
    return parameter;
  };
  const auto boolean = spec(thing_model::DataType::kBoolean);
  const auto enumeration = spec(thing_model::DataType::kEnum);
  const auto date = spec(thing_model::DataType::kDateTime);
  const auto text = spec(thing_model::DataType::kString);
  EXPECT_EQ(AlinkToModelValue(&boolean, 1), Json(true));
  EXPECT_EQ(AlinkToModelValue(&boolean, 0), Json(false));
  EXPECT_EQ(AlinkToModelValue(&boolean, 2), Json(2));  // left for the validator to refuse
  EXPECT_EQ(AlinkToModelValue(&enumeration, 2), Json("2"));
  EXPECT_EQ(AlinkToModelValue(&date, "1600000000123"), Json("2020-09-13T12:26:40.123Z"));
  EXPECT_EQ(AlinkToModelValue(&text, 1600000000000), Json("1600000000000"));
  EXPECT_EQ(AlinkToModelValue(nullptr, 1), Json(1));
}

TEST(AlinkCodecTest, ShadowGetBodyBecomesTheAlibabaDocument) {
  const auto reply = AlinkShadowReply(Json::parse(R"({"shadow":[
      {"service_id":"default","desired":{"properties":{"mode":"1"}},
       "reported":{"properties":{"temperature":21},"event_time":"20261126T174248Z"},"version":7},
      {"service_id":"lamp","desired":{"properties":{}},"reported":{"properties":{"brightness":3}},
       "version":7}]})"),
                                      1'800'000'000'000);
  EXPECT_EQ(reply["method"], "reply");
  EXPECT_EQ(reply["version"], 7);
  EXPECT_EQ(reply["timestamp"], 1'800'000'000);
  EXPECT_EQ(reply["payload"]["status"], "success");
  EXPECT_EQ(reply["payload"]["state"]["reported"],
            Json::parse(R"({"temperature":21,"lamp:brightness":3})"));
  EXPECT_EQ(reply["payload"]["state"]["desired"], Json::parse(R"({"mode":"1"})"));
  EXPECT_TRUE(reply["payload"]["metadata"]["reported"].contains("temperature"));
}

class AlinkProcessorTest : public ::testing::Test {
 protected:
  AlinkProcessorTest() : metrics_(registry_), processor_(metrics_) {
    device_ = *cache_.Get("pk_dn");
  }

  /// The message AdmitUplink makes of a relayed publish of the device on `topic`.
  void Publish(const std::string& topic, std::string payload,
               UplinkProcessor* processor = nullptr) {
    RateLimiter limiter(1000);
    auto admitted = AdmitUplink("iot/up/0/pk_dn/alink" + topic, std::move(payload), limits_,
                                limiter, kReceived);
    ASSERT_TRUE(std::holds_alternative<UplinkMessage>(admitted)) << topic;
    auto message = std::get<UplinkMessage>(std::move(admitted));
    message.message_id = "m" + std::to_string(++n_);
    (processor != nullptr ? *processor : processor_).Process(*device_, message, out_);
  }
  double Rejected(const std::string& reason) { return test_util::RejectedCount(metrics_, reason); }
  std::vector<std::string> Resources() { return test_util::RecordKinds(out_); }
  Json Envelope(int i) { return Json::parse(out_.records.records(i).envelope_json()); }
  Json Services(int i) { return Json::parse(out_.shadow_reports.reports(i).services_json()); }
  /// The one reply queued, its topic checked.
  Json Reply(const std::string& topic) {
    EXPECT_EQ(out_.after_handoff.size(), 1U);
    if (out_.after_handoff.empty()) {
      return {};
    }
    EXPECT_EQ(out_.after_handoff[0].device_topic, "$oc/devices/pk_dn/alink" + topic);
    return Json::parse(out_.after_handoff[0].payload);
  }

  static constexpr int64_t kReceived = 1'800'000'000'000;
  prometheus::Registry registry_;
  GatewayMetrics metrics_;
  UplinkLimits limits_;
  UplinkProcessor processor_;
  DeviceCache cache_{std::make_shared<FakeRegistry>()};
  std::shared_ptr<const DeviceInfo> device_;
  Outputs out_;
  int n_ = 0;
};

constexpr std::string_view kPost = "/sys/pk/dn/thing/event/property/post";

TEST_F(AlinkProcessorTest, PropertyPostReachesShadowAndRulesAndIsAnsweredWithTheIdAsSent) {
  // LinkSDK 4.x: no method.
  Publish(std::string(kPost),
          R"({"id":")" + std::string(kNodeId) +
              R"(","version":"1.0","params":{"temperature":21.5,"switch":1,"mode":2,)"
              R"("birthday":1600000000000,"lamp:brightness":40}})");
  ASSERT_EQ(out_.shadow_reports.reports_size(), 1);
  const auto& report = out_.shadow_reports.reports(0);
  EXPECT_EQ(report.device().dialect(), "alink");
  EXPECT_EQ(report.device().device_id(), "pk_dn");
  const Json services = Services(0);
  ASSERT_EQ(services.size(), 2U);
  EXPECT_EQ(services[0]["service_id"], "default");
  // Wire values in the model's types: bool 0/1, enum as int, date in ms.
  EXPECT_EQ(services[0]["properties"], Json::parse(R"({"temperature":21.5,"switch":true,
      "mode":"2","birthday":"1600000000000"})"));
  EXPECT_EQ(services[1]["service_id"], "lamp");
  EXPECT_EQ(services[1]["properties"], Json::parse(R"({"brightness":40})"));
  ASSERT_THAT(Resources(), ::testing::ElementsAre("device.property/report"));
  const auto& record = out_.records.records(0);
  EXPECT_EQ(record.topic(), kPost);
  EXPECT_EQ(record.device().dialect(), "alink");
  EXPECT_EQ(record.event_time_unix_ms(), kReceived);
  EXPECT_EQ(Envelope(0)["notify_data"]["header"]["dialect"], "alink");
  EXPECT_EQ(out_.after_handoff[0].payload,
            AlinkReply(Json(std::string(kNodeId)), 200, "success", "thing.event.property.post"));
  EXPECT_TRUE(out_.replies.empty());  // nothing before the owners have it
  Reply(std::string(kPost) + "_reply");
}

TEST_F(AlinkProcessorTest, TimedValuesGiveTheRecordItsEventTime) {
  Publish(std::string(kPost),
          R"({"id":"5","params":{"temperature":{"value":20,"time":1700000000123},
      "switch":{"value":0,"time":1700000000123},"mode":{"value":1,"time":"1700000005000"}}})");
  // One service entry per time (params in name order: mode first).
  const Json services = Services(0);
  ASSERT_EQ(services.size(), 2U);
  EXPECT_EQ(services[0]["event_time"], "2023-11-14T22:13:25.000Z");
  EXPECT_EQ(services[0]["properties"], Json::parse(R"({"mode":"1"})"));
  EXPECT_EQ(services[1]["event_time"], "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(services[1]["properties"], Json::parse(R"({"temperature":20,"switch":false})"));
  EXPECT_EQ(out_.records.records(0).event_time_unix_ms(), 1700000005000);
  EXPECT_EQ(Reply(std::string(kPost) + "_reply")["code"], 200);
}

TEST_F(AlinkProcessorTest, NoReplyWhenTheDeviceAsksForNone) {
  Publish(std::string(kPost), R"({"id":"5","sys":{"ack":0},"params":{"temperature":20}})");
  EXPECT_EQ(out_.shadow_reports.reports_size(), 1);
  EXPECT_TRUE(out_.after_handoff.empty());
  Publish(std::string(kPost), R"({"id":"6","sys":{"ack":0},"params":{"temperature":999}})");
  EXPECT_TRUE(out_.after_handoff.empty());
  EXPECT_EQ(Rejected("invalid_property"), 1);
}

TEST_F(AlinkProcessorTest, InvalidParamsAre460NamingThePropertyAndCountedTheValidOnesPass) {
  Publish(std::string(kPost),
          R"({"id":"11","params":{"temperature":500,"lamp:brightness":7,"nope":1}})");
  const Json reply = Reply(std::string(kPost) + "_reply");
  EXPECT_EQ(reply["id"], "11");
  EXPECT_EQ(reply["code"], 460);
  EXPECT_THAT(reply["message"].get<std::string>(), HasSubstr("params.temperature"));
  EXPECT_THAT(reply["message"].get<std::string>(), HasSubstr("params.nope"));
  EXPECT_EQ(Rejected("invalid_property"), 2);
  ASSERT_EQ(out_.shadow_reports.reports_size(), 1);
  EXPECT_EQ(Services(0)[0]["properties"], Json::parse(R"({"brightness":7})"));
  ASSERT_THAT(Resources(),
              ::testing::ElementsAre("device.event/validation_failed", "device.property/report"));
  EXPECT_EQ(out_.records.records(0).topic(), kPost);
  EXPECT_THAT(Envelope(0)["notify_data"]["body"]["detail"].get<std::string>(),
              HasSubstr("params.temperature"));

  // params that are not an object
  out_.Clear();
  Publish(std::string(kPost), R"({"id":"12","params":[1]})");
  EXPECT_EQ(Reply(std::string(kPost) + "_reply")["code"], 460);
  EXPECT_EQ(Rejected("malformed"), 1);
}

TEST_F(AlinkProcessorTest, MalformedJsonIs400WhenTheIdCanBeRecovered) {
  Publish(std::string(kPost), R"({"id":"13","params":{"temperature":)");
  const Json reply = Reply(std::string(kPost) + "_reply");
  EXPECT_EQ(reply["id"], "13");
  EXPECT_EQ(reply["code"], 400);
  EXPECT_EQ(Rejected("malformed"), 1);
  EXPECT_THAT(Resources(), ::testing::ElementsAre("device.event/validation_failed"));
  EXPECT_EQ(out_.shadow_reports.reports_size(), 0);
  out_.Clear();
  Publish(std::string(kPost), "garbage");
  EXPECT_TRUE(out_.after_handoff.empty());
  EXPECT_EQ(Rejected("malformed"), 2);
}

TEST_F(AlinkProcessorTest, PayloadsOverTheLimitsAreRefusedWholeAndAnswered400) {
  const UplinkLimits limits{.max_json_depth = 4, .max_properties = 3, .max_name_bytes = 16};
  UplinkProcessor small(metrics_, limits);
  Publish(std::string(kPost), R"({"id":"1","params":{"temperature":[[[[1]]]]}})", &small);
  EXPECT_EQ(Rejected("too_deep"), 1);
  EXPECT_EQ(Reply(std::string(kPost) + "_reply")["code"], 400);
  out_.Clear();
  Publish(std::string(kPost), R"({"id":"2","params":{"a":1,"b":2,"c":3,"d":4}})", &small);
  EXPECT_EQ(Rejected("too_many"), 1);
  EXPECT_EQ(Reply(std::string(kPost) + "_reply")["id"], "2");
  out_.Clear();
  Publish(std::string(kPost), R"({"id":"3","params":{"abcdefghijklmnopq":1}})", &small);
  EXPECT_EQ(Rejected("too_long"), 1);
  EXPECT_EQ(out_.shadow_reports.reports_size(), 0);
}

TEST_F(AlinkProcessorTest, BatchPostSplitsByTimeAndCarriesItsEvents) {
  const std::string topic = "/sys/pk/dn/thing/event/property/batch/post";
  Publish(topic, R"({"id":"21","method":"thing.event.property.batch.post","params":{
      "properties":{"temperature":[{"value":20,"time":1700000000000},{"value":21,"time":1700000060000}],
                    "lamp:brightness":[{"value":5,"time":1700000000000}]},
      "events":{"alarm":[{"value":{"level":2,"on":1},"time":1700000001000}]}}})");
  const Json services = Services(0);
  ASSERT_EQ(services.size(), 3U);
  EXPECT_EQ(services[0]["service_id"], "lamp");
  EXPECT_EQ(services[1]["properties"], Json::parse(R"({"temperature":20})"));
  EXPECT_EQ(services[2]["properties"], Json::parse(R"({"temperature":21})"));
  EXPECT_EQ(services[2]["event_time"], "2023-11-14T22:14:20.000Z");
  ASSERT_THAT(Resources(), ::testing::ElementsAre("device.property/report", "device.event/report"));
  const Json event = Envelope(1)["notify_data"]["body"]["services"][0];
  EXPECT_EQ(event["event_type"], "alarm");
  EXPECT_EQ(event["paras"], Json::parse(R"({"level":2,"on":true})"));
  EXPECT_EQ(out_.records.records(1).event_time_unix_ms(), 1700000001000);
  const Json reply = Reply(topic + "_reply");
  EXPECT_EQ(reply["code"], 200);
  EXPECT_EQ(reply["method"], "thing.event.property.batch.post");

  out_.Clear();
  Publish(topic, R"({"id":"22","params":{"properties":{"temperature":20}}})");
  EXPECT_EQ(Reply(topic + "_reply")["code"], 460);
  EXPECT_EQ(Rejected("invalid_property"), 1);
  out_.Clear();
  Publish(topic, R"({"id":"23","params":{"events":{"alarm":[{"value":{"level":1}}]}}})");
  const Json reply23 = Reply(topic + "_reply");
  EXPECT_EQ(reply23["code"], 460);
  EXPECT_THAT(reply23["message"].get<std::string>(), HasSubstr("params.events.alarm"));
  EXPECT_EQ(Rejected("invalid_event"), 1);
}

TEST_F(AlinkProcessorTest, EventPostIsValidatedAgainstItsFunctionBlock) {
  const std::string topic = "/sys/pk/dn/thing/event/lamp:fault/post";
  Publish(topic, R"({"id":"31","params":{"value":{"code":3},"time":1700000000000}})");
  ASSERT_THAT(Resources(), ::testing::ElementsAre("device.event/report"));
  const Json event = Envelope(0)["notify_data"]["body"]["services"][0];
  EXPECT_EQ(event["service_id"], "lamp");
  EXPECT_EQ(event["event_type"], "fault");
  EXPECT_EQ(event["paras"], Json::parse(R"({"code":3})"));
  EXPECT_EQ(event["event_time"], "2023-11-14T22:13:20.000Z");
  EXPECT_EQ(out_.records.records(0).topic(), topic);
  const Json reply = Reply(topic + "_reply");
  EXPECT_EQ(reply["code"], 200);
  EXPECT_EQ(reply["method"], "thing.event.lamp:fault.post");

  // Plain params (no {value,time}) are the output themselves.
  out_.Clear();
  Publish("/sys/pk/dn/thing/event/alarm/post", R"({"id":"32","params":{"level":1}})");
  EXPECT_EQ(Reply("/sys/pk/dn/thing/event/alarm/post_reply")["code"], 200);
}

TEST_F(AlinkProcessorTest, UnknownOrInvalidEventsAre460AndCounted) {
  Publish("/sys/pk/dn/thing/event/explosion/post", R"({"id":"41","params":{"value":{}}})");
  Json reply = Reply("/sys/pk/dn/thing/event/explosion/post_reply");
  EXPECT_EQ(reply["code"], 460);
  EXPECT_THAT(reply["message"].get<std::string>(), HasSubstr("explosion"));
  EXPECT_EQ(Rejected("invalid_event"), 1);
  EXPECT_THAT(Resources(), ::testing::ElementsAre("device.event/validation_failed"));
  out_.Clear();
  Publish("/sys/pk/dn/thing/event/alarm/post", R"({"id":"42","params":{"value":{"level":9}}})");
  reply = Reply("/sys/pk/dn/thing/event/alarm/post_reply");
  EXPECT_EQ(reply["code"], 460);
  EXPECT_THAT(reply["message"].get<std::string>(), HasSubstr("level"));
  EXPECT_EQ(Rejected("invalid_event"), 2);
}

TEST_F(AlinkProcessorTest, RawAndCustomTopicsAreDeviceMessagesKeepingTheirTopic) {
  Publish("/sys/pk/dn/thing/model/up_raw", std::string("\x01\xff\x00\x7f", 4));
  Publish("/pk/dn/user/data/up", R"({"hello":1})");
  ASSERT_THAT(Resources(),
              ::testing::ElementsAre("device.message/report", "device.message/report"));
  const Json raw = Envelope(0)["notify_data"]["body"];
  EXPECT_EQ(raw["topic"], "/sys/pk/dn/thing/model/up_raw");
  EXPECT_EQ(*common::Base64Decode(raw["content"].get<std::string>()),
            std::string("\x01\xff\x00\x7f", 4));
  const Json custom = Envelope(1)["notify_data"]["body"];
  EXPECT_EQ(custom["topic"], "/pk/dn/user/data/up");
  EXPECT_EQ(custom["content"], Json::parse(R"({"hello":1})"));
  EXPECT_EQ(out_.records.records(1).topic(), "/pk/dn/user/data/up");
  EXPECT_TRUE(out_.after_handoff.empty());
}

TEST_F(AlinkProcessorTest, ShadowUpdateReportsGetAsksAndDeleteIsRefused) {
  const std::string topic = "/shadow/update/pk/dn";
  Publish(topic,
          R"({"method":"update","state":{"reported":{"temperature":19,"switch":1}},"version":3})");
  ASSERT_EQ(out_.shadow_reports.reports_size(), 1);
  EXPECT_EQ(Services(0)[0]["properties"], Json::parse(R"({"temperature":19,"switch":true})"));
  EXPECT_EQ(out_.records.records(0).topic(), topic);
  Json answer = Reply("/shadow/get/pk/dn");
  EXPECT_EQ(answer["method"], "reply");
  EXPECT_EQ(answer["payload"]["status"], "success");
  EXPECT_EQ(answer["payload"]["version"], 3);

  out_.Clear();
  Publish(topic, R"({"method":"get"})");
  ASSERT_EQ(out_.shadow_gets.size(), 1U);
  EXPECT_EQ(out_.shadow_gets[0].device().dialect(), "alink");
  EXPECT_TRUE(out_.after_handoff.empty());  // the shadow's answer is the reply

  out_.Clear();
  Publish(topic, R"({"method":"delete","state":{"reported":{"temperature":"null"}},"version":4})");
  answer = Reply("/shadow/get/pk/dn");
  EXPECT_EQ(answer["payload"]["status"], "error");
  EXPECT_EQ(Rejected("unsupported"), 1);

  out_.Clear();
  Publish(topic, R"({"method":"update","state":{"reported":{"temperature":1000}},"version":5})");
  answer = Reply("/shadow/get/pk/dn");
  EXPECT_EQ(answer["payload"]["status"], "error");
  EXPECT_EQ(answer["payload"]["content"]["errorcode"], "460");
  EXPECT_EQ(Rejected("invalid_property"), 1);

  out_.Clear();
  Publish(topic, R"({"method":"update","state":{"desired":"null"},"version":6})");
  EXPECT_EQ(Reply("/shadow/get/pk/dn")["payload"]["status"], "success");
  out_.Clear();
  Publish(topic, R"({"state":{}})");
  EXPECT_EQ(Reply("/shadow/get/pk/dn")["payload"]["content"]["errorcode"], "401");
  EXPECT_EQ(Rejected("malformed"), 1);
}

TEST_F(AlinkProcessorTest, NtpIsAnsweredWithTheThreeTimes) {
  Publish("/ext/ntp/pk/dn/request", R"({"deviceSendTime":"1799999999000"})");
  ASSERT_EQ(out_.replies.size(), 1U);
  EXPECT_EQ(out_.replies[0].device_topic, "$oc/devices/pk_dn/alink/ext/ntp/pk/dn/response");
  const Json reply = Json::parse(out_.replies[0].payload);
  EXPECT_EQ(reply["deviceSendTime"], "1799999999000");
  EXPECT_EQ(reply["serverRecvTime"], std::to_string(kReceived));
  EXPECT_TRUE(reply["serverSendTime"].is_string());
  Publish("/ext/ntp/pk/dn/request", R"({"nothing":1})");
  EXPECT_EQ(Rejected("malformed"), 1);
}

TEST_F(AlinkProcessorTest, DeviceRepliesCompleteThePlatformsRequestsByTheirId) {
  Publish("/sys/pk/dn/thing/service/property/set_reply", R"({"id":"42","code":200,"data":{}})");
  Publish("/sys/pk/dn/thing/service/property/get_reply",
          R"({"id":"43","code":200,"data":{"temperature":20,"switch":0,"lamp:brightness":9}})");
  Publish("/sys/pk/dn/thing/service/reboot_reply",
          R"({"id":"44","code":100001,"message":"busy","data":{"left":3}})");
  Publish("/sys/pk/dn/rrpc/response/555", R"({"id":"45","code":200,"data":{"ok":1}})");
  Publish("/ext/rrpc/556/sys/pk/dn/thing/service/reboot", "done");
  Publish("/sys/pk/dn/thing/service/property/set_reply",
          R"({"id":"shadow-0a1b","code":200,"data":{}})");
  ASSERT_EQ(out_.responses.responses_size(), 5);
  const auto& set = out_.responses.responses(0);
  EXPECT_EQ(set.kind(), command_dispatch::v1::RESPONSE_KIND_PROPERTIES_SET);
  EXPECT_EQ(set.request_id(), "42");
  EXPECT_EQ(set.device().dialect(), "alink");
  EXPECT_EQ(Json::parse(set.payload_json()),
            Json::parse(R"({"result_code":0,"result_desc":"success"})"));
  const auto& get = out_.responses.responses(1);
  EXPECT_EQ(get.kind(), command_dispatch::v1::RESPONSE_KIND_PROPERTIES_GET);
  EXPECT_EQ(get.request_id(), "43");
  EXPECT_EQ(Json::parse(get.payload_json())["services"],
            Json::parse(R"([{"service_id":"lamp","properties":{"brightness":9}},
                {"service_id":"default","properties":{"temperature":20,"switch":false}}])"));
  const auto& command = out_.responses.responses(2);
  EXPECT_EQ(command.kind(), command_dispatch::v1::RESPONSE_KIND_COMMAND);
  EXPECT_EQ(command.request_id(), "44");
  EXPECT_EQ(Json::parse(command.payload_json()),
            Json::parse(R"({"result_code":100001,"result_desc":"busy","paras":{"left":3}})"));
  EXPECT_EQ(out_.responses.responses(3).request_id(), "555");  // RRPC: the messageId
  EXPECT_EQ(Json::parse(out_.responses.responses(3).payload_json())["paras"],
            Json::parse(R"({"ok":1})"));
  EXPECT_EQ(out_.responses.responses(4).request_id(), "556");
  EXPECT_EQ(Json::parse(out_.responses.responses(4).payload_json())["paras"]["content"], "done");
  ASSERT_EQ(out_.shadow_set_results.size(), 1U);
  EXPECT_EQ(out_.shadow_set_results[0].request_id(), "shadow-0a1b");
  EXPECT_THAT(Resources(), ::testing::Each("device.command/response"));
  EXPECT_TRUE(out_.after_handoff.empty());  // answers are not answered

  out_.Clear();
  Publish("/sys/pk/dn/thing/service/property/set_reply", R"({"code":200})");
  EXPECT_EQ(out_.responses.responses_size(), 0);
  EXPECT_EQ(Rejected("malformed"), 1);
}

TEST_F(AlinkProcessorTest, TopicsOfAnotherDeviceAndUnsupportedFunctionsAreRejected) {
  Publish("/sys/pk/other/thing/event/property/post", R"({"id":"1","params":{}})");
  EXPECT_EQ(Rejected("unknown_topic"), 1);
  Publish("/sys/pk/dn/thing/deviceinfo/update", R"({"id":"2","params":[]})");
  EXPECT_EQ(Rejected("unsupported"), 1);
  EXPECT_EQ(out_.shadow_reports.reports_size(), 0);
  EXPECT_TRUE(out_.after_handoff.empty());
  EXPECT_THAT(Resources(), ::testing::Each("device.event/validation_failed"));
}

TEST_F(AlinkProcessorTest, HuaweiDevicesSayTheirDialectToo) {
  auto huawei = *cache_.Get("pk_hw");
  EXPECT_EQ(huawei->dialect, "");
  UplinkMessage message{
      .message_id = "h1",
      .kind = UplinkKind::kPropertiesReport,
      .device_id = "pk_hw",
      .topic = "$oc/devices/pk_hw/sys/properties/report",
      .request_id = {},
      .payload = R"({"services":[{"service_id":"default","properties":{"temperature":1}}]})",
      .received_at_unix_ms = kReceived};
  processor_.Process(*huawei, message, out_);
  ASSERT_EQ(out_.shadow_reports.reports_size(), 1);
  EXPECT_EQ(out_.shadow_reports.reports(0).device().dialect(), "huawei");
  EXPECT_EQ(Envelope(0)["notify_data"]["header"]["dialect"], "huawei");
}

}  // namespace
}  // namespace iot::device_gateway
