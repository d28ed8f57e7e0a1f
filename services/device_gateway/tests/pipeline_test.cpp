// UplinkProcessor and UplinkPipeline against in-memory fakes of the registry, the owners and
// the broker.
#include "iot/device_gateway/pipeline.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "iot/testing/process.h"
#include "processor_test_util.h"

namespace iot::device_gateway {
namespace {

using iot::testing::WaitUntil;
using Json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::string_view kModel = R"({
  "product_id": "p1", "name": "Meter", "device_type": "Meter", "protocol_type": "MQTT",
  "data_format": "json", "manufacturer_name": "Acme",
  "service_capabilities": [{
    "service_id": "meter",
    "properties": [
      {"property_name": "voltage", "data_type": "decimal", "min": "0", "max": "480", "method": "R"},
      {"property_name": "state", "data_type": "enum", "enum_list": ["ON", "OFF"], "method": "RW"}
    ],
    "commands": [],
    "events": [{"event_type": "overload",
                "paras": [{"para_name": "current", "data_type": "decimal", "min": "0", "max": "1000"}]}]
  }]
})";

class FakeRegistry final : public DeviceContextSource {
 public:
  absl::StatusOr<DeviceContextData> GetDeviceContext(const std::string& device_id) override {
    ++calls;
    if (unavailable > 0) {
      --unavailable;
      return absl::UnavailableError("thing-model down");
    }
    if (device_id == "gone") {
      return absl::NotFoundError("device gone");
    }
    return DeviceContextData{.device_id = device_id,
                             .tenant_id = "t1",
                             .product_id = "p1",
                             .node_id = "n",
                             .dialect = {},
                             .model_version = 1,
                             .product_json = std::string(kModel)};
  }
  std::atomic<int> calls{0};
  std::atomic<int> unavailable{0};
};

/// Records what the owners receive; fails while `failures` says so; refuses the records listed
/// in `refused` (IngestAck.rejected) and every request holding one of `poison` (INVALID_ARGUMENT).
class FakeOwners final : public Downstream, public DeviceStatusSink, public DevicePublisher {
 public:
  absl::Status Fail() {
    std::lock_guard lock(mu);
    if (failures > 0) {
      --failures;
      // UNAVAILABLE and UNIMPLEMENTED (an owner not built yet) are both retried.
      return failures % 2 == 0 ? absl::UnavailableError("down") : absl::UnimplementedError("no");
    }
    return absl::OkStatus();
  }
  /// The answer to a request holding these message ids.
  OwnerAnswer Answer(const std::vector<std::pair<std::string, std::string>>& ids) {
    std::lock_guard lock(mu);
    device_gateway::v1::IngestAck ack;
    for (const auto& [id, device] : ids) {
      if (poison.contains(id)) {
        ++poisoned_calls;
        return absl::InvalidArgumentError("poison record " + id);
      }
    }
    for (const auto& [id, device] : ids) {
      if (refused.contains(id)) {
        auto* rejected = ack.add_rejected();
        rejected->set_message_id(id);
        rejected->set_device_id(device);
        rejected->set_reason("invalid_property");
        rejected->set_detail("voltage: above the owner's limit");
      }
    }
    return ack;
  }
  template <typename Items>
  static std::vector<std::pair<std::string, std::string>> Ids(const Items& items) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& item : items) {
      out.emplace_back(item.message_id(), item.device().device_id());
    }
    return out;
  }
  /// Keeps what the owner took: all but the refused.
  template <typename Items, typename Out>
  void Take(const Items& items, Out& out) {
    std::lock_guard lock(mu);
    for (const auto& item : items) {
      if (!refused.contains(item.message_id())) {
        out.push_back(item);
      }
    }
  }
  OwnerAnswer ReportProperties(const shadow::v1::ReportPropertiesRequest& request) override {
    if (auto s = Fail(); !s.ok()) {
      return s;
    }
    auto answer = Answer(Ids(request.reports()));
    if (answer.ok()) {
      Take(request.reports(), shadow_reports);
    }
    return answer;
  }
  OwnerAnswer CompletePropertySet(const shadow::v1::PropertySetResult& result) override {
    std::lock_guard lock(mu);
    set_results.push_back(result);
    return device_gateway::v1::IngestAck();
  }
  absl::StatusOr<std::string> GetDeviceShadow(
      const shadow::v1::DeviceShadowGetRequest& request) override {
    return R"({"shadow":[],"for":")" + request.device().device_id() + "\"}";
  }
  OwnerAnswer ShadowPresence(const device_gateway::v1::PresenceEvents& events) override {
    std::lock_guard lock(mu);
    shadow_presence += events.events_size();
    return device_gateway::v1::IngestAck();
  }
  OwnerAnswer CompleteRequests(
      const command_dispatch::v1::CompleteRequestsRequest& request) override {
    std::lock_guard lock(mu);
    for (const auto& r : request.responses()) {
      responses.push_back(r);
    }
    return device_gateway::v1::IngestAck();
  }
  OwnerAnswer CommandPresence(const device_gateway::v1::PresenceEvents& events) override {
    std::lock_guard lock(mu);
    command_presence += events.events_size();
    return device_gateway::v1::IngestAck();
  }
  OwnerAnswer Ingest(const rule_forwarding::v1::IngestRequest& request) override {
    if (auto s = Fail(); !s.ok()) {
      return s;
    }
    {
      std::unique_lock lock(mu);
      ++ingest_calls;
      blocked_cv.wait(lock, [&] { return !blocked; });
    }
    auto answer = Answer(Ids(request.records()));
    if (answer.ok()) {
      Take(request.records(), records);
    }
    return answer;
  }
  absl::Status ReportPresence(const PresenceEvent& event) override {
    std::lock_guard lock(mu);
    status_events.push_back(event.device_id + (event.online ? "+" : "-"));
    return absl::OkStatus();
  }
  absl::StatusOr<bool> Publish(const std::string& device_topic, std::string_view payload,
                               int /*qos*/) override {
    std::lock_guard lock(mu);
    published.emplace_back(device_topic, std::string(payload));
    return true;
  }
  void Block(bool value) {
    {
      std::lock_guard lock(mu);
      blocked = value;
    }
    blocked_cv.notify_all();
  }
  size_t RecordCount() {
    std::lock_guard lock(mu);
    return records.size();
  }

  std::mutex mu;
  std::condition_variable blocked_cv;
  bool blocked = false;
  int failures = 0;
  std::set<std::string> refused;
  std::set<std::string> poison;
  int poisoned_calls = 0;
  std::vector<shadow::v1::PropertyReport> shadow_reports;
  std::vector<shadow::v1::PropertySetResult> set_results;
  std::vector<command_dispatch::v1::DeviceResponse> responses;
  std::vector<rule_forwarding::v1::ForwardRecord> records;
  std::vector<std::string> status_events;
  std::vector<std::pair<std::string, std::string>> published;
  int shadow_presence = 0;
  int command_presence = 0;
  int ingest_calls = 0;
};

/// The dead-letter table in memory.
class FakeDeadLetters final : public DeadLetterStore {
 public:
  absl::Status Put(const DeadLetter& letter) override {
    std::lock_guard lock(mu);
    if (unavailable > 0) {
      --unavailable;
      return absl::UnavailableError("postgres down");
    }
    letters.push_back(letter);
    return absl::OkStatus();
  }
  std::vector<DeadLetter> Letters() {
    std::lock_guard lock(mu);
    return letters;
  }
  std::mutex mu;
  int unavailable = 0;
  std::vector<DeadLetter> letters;
};

UplinkMessage Message(UplinkKind kind, const std::string& device, std::string payload,
                      std::string request_id = "") {
  static std::atomic<int> n{0};
  return UplinkMessage{.message_id = "m" + std::to_string(++n),
                       .kind = kind,
                       .device_id = device,
                       .topic = "$oc/devices/" + device + "/sys/x",
                       .request_id = std::move(request_id),
                       .payload = std::move(payload),
                       .received_at_unix_ms = 1000};
}

/// The voltage a forwarding record's property report carried.
int RecordedVoltage(const rule_forwarding::v1::ForwardRecord& record) {
  return Json::parse(
             record.envelope_json())["notify_data"]["body"]["services"][0]["properties"]["voltage"]
      .get<int>();
}

class ProcessorTest : public ::testing::Test {
 protected:
  ProcessorTest() : metrics_(registry_), processor_(metrics_) { device_ = *cache_.Get("p1_d"); }
  double Rejected(const std::string& reason) { return test_util::RejectedCount(metrics_, reason); }
  std::vector<std::string> Resources() { return test_util::RecordKinds(out_); }

  prometheus::Registry registry_;
  GatewayMetrics metrics_;
  UplinkProcessor processor_;
  DeviceCache cache_{std::make_shared<FakeRegistry>()};
  std::shared_ptr<const DeviceInfo> device_;
  Outputs out_;
};

TEST_F(ProcessorTest, InvalidPropertiesAreRejectedAndCountedValidOnesPass) {
  processor_.Process(
      *device_,
      Message(
          UplinkKind::kPropertiesReport, "p1_d",
          R"({"services":[{"service_id":"meter","properties":{"voltage":230.5,"state":"BROKEN"},"event_time":"20261126T174248Z"}]})"),
      out_);
  ASSERT_EQ(out_.shadow_reports.reports_size(), 1);
  const auto services = Json::parse(out_.shadow_reports.reports(0).services_json());
  EXPECT_EQ(services[0]["properties"], Json::parse(R"({"voltage":230.5})"));
  EXPECT_EQ(services[0]["event_time"], "20261126T174248Z");
  EXPECT_EQ(out_.shadow_reports.reports(0).device().tenant_id(), "t1");
  EXPECT_THAT(Resources(),
              ::testing::ElementsAre("device.event/validation_failed", "device.property/report"));
  const auto envelope = Json::parse(out_.records.records(1).envelope_json());
  EXPECT_EQ(envelope["resource"], "device.property");
  EXPECT_EQ(envelope["event_time"], "20261126T174248Z");
  EXPECT_EQ(envelope["notify_data"]["header"]["device_id"], "p1_d");
  EXPECT_EQ(envelope["notify_data"]["header"]["product_id"], "p1");
  EXPECT_EQ(envelope["notify_data"]["body"]["services"][0]["properties"]["voltage"], 230.5);
  const auto failed = Json::parse(out_.records.records(0).envelope_json());
  EXPECT_THAT(failed["notify_data"]["body"]["detail"].get<std::string>(),
              ::testing::HasSubstr("state"));
  EXPECT_EQ(Rejected("invalid_property"), 1);
}

TEST_F(ProcessorTest, MalformedPayloadsBecomeValidationFailedRecords) {
  processor_.Process(*device_, Message(UplinkKind::kPropertiesReport, "p1_d", "{not json"), out_);
  processor_.Process(*device_, Message(UplinkKind::kEventUp, "p1_d", "[]"), out_);
  processor_.Process(*device_, Message(UplinkKind::kCommandResponse, "p1_d", "42", "r1"), out_);
  processor_.Process(*device_, Message(UplinkKind::kShadowGet, "p1_d", "nope", "r2"), out_);
  EXPECT_EQ(out_.shadow_reports.reports_size(), 0);
  EXPECT_EQ(out_.responses.responses_size(), 0);
  EXPECT_TRUE(out_.shadow_gets.empty());
  EXPECT_THAT(Resources(), ::testing::Each("device.event/validation_failed"));
  EXPECT_EQ(Resources().size(), 4U);
  EXPECT_EQ(Rejected("malformed"), 4);
}

/// A processor with small limits: each payload just over one is refused whole and counted under
/// its reason; the same payload at the limit passes.
TEST_F(ProcessorTest, PayloadsOverALimitAreRefusedWholeAndCounted) {
  const UplinkLimits limits{.max_json_depth = 6,
                            .max_services = 2,
                            .max_properties = 3,
                            .max_name_bytes = 16,
                            .max_string_bytes = 8};
  UplinkProcessor processor(metrics_, limits);
  const auto nested = [](int levels) {
    std::string text = "0";
    for (int i = 0; i < levels; ++i) {
      text.insert(0, 1, '[');
      text.push_back(']');
    }
    return text;
  };
  const auto event = [](const std::string& paras) {
    return R"({"service_id":"meter","event_type":"overload","paras":)" + paras + "}";
  };
  struct Case {
    std::string name;
    UplinkKind kind;
    std::string at_limit;
    std::string over;
    std::string reason;
  };
  const Case cases[] = {
      {"report depth", UplinkKind::kPropertiesReport,
       R"({"services":[{"service_id":"meter","properties":{"voltage":1,"x":)" + nested(2) + "}}]}",
       R"({"services":[{"service_id":"meter","properties":{"voltage":1,"x":)" + nested(3) + "}}]}",
       "too_deep"},
      {"report services", UplinkKind::kPropertiesReport,
       R"({"services":[{"service_id":"meter","properties":{"voltage":1}},{"service_id":"meter","properties":{}}]})",
       R"({"services":[{"service_id":"meter","properties":{"voltage":1}},{"service_id":"meter","properties":{}},{"service_id":"meter","properties":{}}]})",
       "too_many"},
      {"report properties", UplinkKind::kPropertiesReport,
       R"({"services":[{"service_id":"meter","properties":{"voltage":1,"a":1,"b":2}}]})",
       R"({"services":[{"service_id":"meter","properties":{"voltage":1,"a":1,"b":2,"c":3}}]})",
       "too_many"},
      {"report name", UplinkKind::kPropertiesReport,
       R"({"services":[{"service_id":"meter","properties":{"voltage":1,"abcdefghijklmnop":1}}]})",
       R"({"services":[{"service_id":"meter","properties":{"voltage":1,"abcdefghijklmnopq":1}}]})",
       "too_long"},
      {"event depth", UplinkKind::kEventUp, R"({"services":[)" + event(nested(3)) + "]}",
       R"({"services":[)" + event(nested(4)) + "]}", "too_deep"},
      {"events", UplinkKind::kEventUp, R"({"services":[)" + event("{}") + "," + event("{}") + "]}",
       R"({"services":[)" + event("{}") + "," + event("{}") + "," + event("{}") + "]}", "too_many"},
      {"paras", UplinkKind::kEventUp, R"({"services":[)" + event(R"({"a":1,"b":2,"c":3})") + "]}",
       R"({"services":[)" + event(R"({"a":1,"b":2,"c":3,"d":4})") + "]}", "too_many"},
      {"para name", UplinkKind::kEventUp,
       R"({"services":[)" + event(R"({"abcdefghijklmnop":1})") + "]}",
       R"({"services":[)" + event(R"({"abcdefghijklmnopq":1})") + "]}", "too_long"},
      {"para string", UplinkKind::kEventUp,
       R"({"services":[)" + event(R"({"a":"12345678"})") + "]}",
       R"({"services":[)" + event(R"({"a":"123456789"})") + "]}", "too_long"},
      {"message depth", UplinkKind::kMessageUp, nested(6), nested(7), "too_deep"},
      {"response depth", UplinkKind::kCommandResponse,
       R"({"result_code":0,"paras":)" + nested(5) + "}",
       R"({"result_code":0,"paras":)" + nested(6) + "}", "too_deep"},
      {"response string", UplinkKind::kCommandResponse, R"({"response_name":"12345678"})",
       R"({"response_name":"123456789"})", "too_long"},
      {"shadow get name", UplinkKind::kShadowGet, R"({"service_id":"12345678"})",
       R"({"service_id":"123456789"})", "too_long"},
  };
  for (const Case& c : cases) {
    for (const bool over : {false, true}) {
      const double before = Rejected(c.reason);
      out_.Clear();
      processor.Process(*device_, Message(c.kind, "p1_d", over ? c.over : c.at_limit, "r1"), out_);
      const bool refused = Rejected(c.reason) == before + 1;
      EXPECT_EQ(refused, over) << c.name << (over ? " over the limit" : " at the limit");
      if (over) {
        ASSERT_EQ(out_.records.records_size(), 1) << c.name;
        EXPECT_EQ(out_.records.records(0).event(), "validation_failed") << c.name;
        EXPECT_TRUE(out_.shadow_reports.reports().empty() && out_.responses.responses().empty() &&
                    out_.shadow_gets.empty())
            << c.name;
        const auto body =
            Json::parse(out_.records.records(0).envelope_json())["notify_data"]["body"];
        EXPECT_EQ(body["reason"], c.reason) << c.name;
      }
    }
  }
}

TEST_F(ProcessorTest, TheReportedDeepMessageIsRefusedAndBytesThatAreNotJsonStillPass) {
  // The crash of issue #15: 800 KB of one JSON array nested 400,000 deep on messages/up.
  const std::string deep = std::string(400'000, '[') + std::string(400'000, ']');
  processor_.Process(*device_, Message(UplinkKind::kMessageUp, "p1_d", deep), out_);
  ASSERT_EQ(out_.records.records_size(), 1);
  EXPECT_EQ(out_.records.records(0).event(), "validation_failed");
  EXPECT_EQ(Rejected("too_deep"), 1);
  // Bytes with many brackets that are not JSON are carried as a string, like any other bytes.
  out_.Clear();
  const std::string brackets = std::string(1000, '[') + "binary";
  processor_.Process(*device_, Message(UplinkKind::kMessageUp, "p1_d", brackets), out_);
  ASSERT_EQ(out_.records.records_size(), 1);
  const auto body = Json::parse(out_.records.records(0).envelope_json())["notify_data"]["body"];
  EXPECT_EQ(body["content"], brackets);
  EXPECT_EQ(Rejected("too_deep"), 1);
}

TEST_F(ProcessorTest, EventsAreValidatedAndSystemServicesAccepted) {
  // As Huawei's SDKs send them: no event_time, no object_device_id, system services.
  processor_.Process(*device_,
                     Message(UplinkKind::kEventUp, "p1_d",
                             R"({"services":[
                {"service_id":"meter","event_type":"overload","paras":{"current":12}},
                {"service_id":"meter","event_type":"overload","paras":{"current":-5}},
                {"service_id":"meter","event_type":"explosion","paras":{}},
                {"service_id":"$sdk_info","event_type":"sdk_info_report","paras":{"type":"C","version":"1.0"}},
                {"service_id":"$time_sync","event_type":"time_sync_request","paras":{"device_send_time":1582685678789}}]})"),
                     out_);
  EXPECT_EQ(Rejected("invalid_event"), 2);
  EXPECT_THAT(Resources(),
              ::testing::ElementsAre("device.event/validation_failed", "device.event/report"));
  const auto body = Json::parse(out_.records.records(1).envelope_json())["notify_data"]["body"];
  ASSERT_EQ(body["services"].size(), 3U);
  EXPECT_EQ(body["services"][1]["service_id"], "$sdk_info");
  ASSERT_EQ(out_.replies.size(), 1U);
  EXPECT_EQ(out_.replies[0].device_topic, "$oc/devices/p1_d/sys/events/down");
  const auto reply = Json::parse(out_.replies[0].payload);
  EXPECT_EQ(reply["services"][0]["event_type"], "time_sync_response");
  EXPECT_EQ(reply["services"][0]["paras"]["device_send_time"], 1582685678789);
  EXPECT_EQ(reply["services"][0]["paras"]["server_recv_time"], 1000);
}

TEST_F(ProcessorTest, AcceptsWhatHuaweiDeviceSdksSend) {
  // Shapes of huaweicloud-iot-device-sdk-python / -c: null fields, string timestamps,
  // ISO event times.
  processor_.Process(
      *device_,
      Message(UplinkKind::kPropertiesReport, "p1_d",
              R"({"services":[{"service_id":"meter","properties":{"voltage":1},"event_time":null},
                              {"service_id":"meter","properties":{"voltage":2},"event_time":"2026-11-26T17:42:48Z"}]})"),
      out_);
  processor_.Process(
      *device_,
      Message(
          UplinkKind::kEventUp, "p1_d",
          R"({"object_device_id":null,"services":[{"service_id":"$time_sync","event_type":"time_sync_request","event_time":"20261126T174248Z","paras":{"device_send_time":"1582685678789"}}]})"),
      out_);
  processor_.Process(*device_,
                     Message(UplinkKind::kMessageUp, "p1_d",
                             R"({"name":null,"id":null,"content":"3","object_device_id":null})"),
                     out_);
  processor_.Process(*device_, Message(UplinkKind::kShadowGet, "p1_d", "", "s1"), out_);
  EXPECT_EQ(Rejected("malformed"), 0);
  EXPECT_EQ(Rejected("invalid_property"), 0);
  EXPECT_EQ(Rejected("invalid_event"), 0);
  ASSERT_EQ(out_.shadow_reports.reports_size(), 1);
  EXPECT_EQ(Json::parse(out_.shadow_reports.reports(0).services_json()).size(), 2U);
  ASSERT_EQ(out_.replies.size(), 1U);
  EXPECT_EQ(Json::parse(out_.replies[0].payload)["services"][0]["paras"]["device_send_time"],
            "1582685678789");
  EXPECT_EQ(out_.shadow_gets.size(), 1U);
  EXPECT_THAT(Resources(), ::testing::ElementsAre("device.property/report", "device.event/report",
                                                  "device.message/report"));
}

TEST_F(ProcessorTest, ResponsesGoToTheirOwner) {
  processor_.Process(*device_,
                     Message(UplinkKind::kPropertiesSetResponse, "p1_d",
                             R"({"result_code":0,"result_desc":"success"})", "shadow-7"),
                     out_);
  processor_.Process(*device_,
                     Message(UplinkKind::kCommandResponse, "p1_d",
                             R"({"result_code":0,"response_name":"r","paras":{"a":1}})", "c-1"),
                     out_);
  ASSERT_EQ(out_.shadow_set_results.size(), 1U);
  EXPECT_EQ(out_.shadow_set_results[0].request_id(), "shadow-7");
  ASSERT_EQ(out_.responses.responses_size(), 1);
  EXPECT_EQ(out_.responses.responses(0).kind(), command_dispatch::v1::RESPONSE_KIND_COMMAND);
  EXPECT_EQ(Json::parse(out_.responses.responses(0).payload_json())["paras"]["a"], 1);
  EXPECT_THAT(Resources(), ::testing::Each("device.command/response"));
}

TEST_F(ProcessorTest, MessagesCarryAnyBytes) {
  processor_.Process(*device_, Message(UplinkKind::kMessageUp, "p1_d", R"({"content":"hi"})"),
                     out_);
  processor_.Process(*device_, Message(UplinkKind::kMessageUp, "p1_d", std::string("\xff\x01", 2)),
                     out_);
  ASSERT_EQ(out_.records.records_size(), 2);
  EXPECT_EQ(
      Json::parse(
          out_.records.records(0).envelope_json())["notify_data"]["body"]["content"]["content"],
      "hi");
  EXPECT_TRUE(Json::parse(out_.records.records(1).envelope_json())["notify_data"]["body"]["content"]
                  .is_string());
}

TEST(DeviceCacheTest, ChangeFeedInvalidatesDevicesAndProducts) {
  auto registry = std::make_shared<FakeRegistry>();
  DeviceCache cache(registry, 2);
  ASSERT_TRUE(cache.Get("p1_a").ok());
  ASSERT_TRUE(cache.Get("p1_a").ok());
  EXPECT_EQ(registry->calls, 1);
  cache.OnChange(R"({"kind":"device","op":"upsert","device_id":"p1_a"})");
  ASSERT_TRUE(cache.Get("p1_a").ok());
  EXPECT_EQ(registry->calls, 2);
  cache.OnChange(R"({"kind":"product","product_id":"p1","model_version":2})");
  EXPECT_EQ(cache.size(), 0U);
  ASSERT_TRUE(cache.Get("p1_a").ok());
  ASSERT_TRUE(cache.Get("p1_b").ok());
  ASSERT_TRUE(cache.Get("p1_c").ok());
  EXPECT_EQ(cache.size(), 2U);  // bounded
  EXPECT_EQ(cache.Get("gone").status().code(), absl::StatusCode::kNotFound);
}

UplinkMessage Report(const std::string& device, int value) {
  return Message(UplinkKind::kPropertiesReport, device,
                 R"({"services":[{"service_id":"meter","properties":{"voltage":)" +
                     std::to_string(value) + "}}]}");
}

class PipelineTest : public ::testing::Test {
 protected:
  PipelineTest() : metrics_(registry_) {}
  std::unique_ptr<UplinkPipeline> Start(size_t batch = 10, size_t owner_batches = 4) {
    return std::make_unique<UplinkPipeline>(PipelineOptions{.shards = 3,
                                                            .max_batch = batch,
                                                            .owner_batches = owner_batches,
                                                            .retry_initial = milliseconds(1),
                                                            .retry_max = milliseconds(5),
                                                            .max_attempts = 2,
                                                            .message_id_prefix = "t"},
                                            std::make_shared<DeviceCache>(registry_fake_), owners_,
                                            owners_, owners_, dead_letters_, metrics_);
  }
  /// An acknowledgement that records which message it was for.
  UplinkPipeline::Ack AckOf(const std::string& what) {
    return [this, what] {
      std::lock_guard lock(acked_mu_);
      acked_.push_back(what);
    };
  }
  std::vector<std::string> Acked() {
    std::lock_guard lock(acked_mu_);
    return acked_;
  }
  prometheus::Registry registry_;
  GatewayMetrics metrics_;
  std::shared_ptr<FakeRegistry> registry_fake_ = std::make_shared<FakeRegistry>();
  std::shared_ptr<FakeOwners> owners_ = std::make_shared<FakeOwners>();
  std::shared_ptr<FakeDeadLetters> dead_letters_ = std::make_shared<FakeDeadLetters>();
  std::mutex acked_mu_;
  std::vector<std::string> acked_;
};

TEST_F(PipelineTest, OwnersDownForAWhileLoseNothingAndKeepPerDeviceOrder) {
  owners_->failures = 25;
  registry_fake_->unavailable = 3;
  auto pipeline = Start();
  constexpr int kPerDevice = 40;
  for (int i = 0; i < kPerDevice; ++i) {
    for (const std::string device : {"p1_a", "p1_b", "p1_c", "p1_d"}) {
      ASSERT_TRUE(pipeline->Submit(
          Message(UplinkKind::kPropertiesReport, device,
                  R"({"services":[{"service_id":"meter","properties":{"voltage":)" +
                      std::to_string(i) + "}}]}"),
          AckOf(device)));
    }
  }
  ASSERT_TRUE(WaitUntil([&] { return Acked().size() == 4 * kPerDevice; }, seconds(20)));
  EXPECT_EQ(owners_->RecordCount(), 4 * kPerDevice);
  pipeline->Stop(std::chrono::steady_clock::now() + seconds(5));
  std::map<std::string, std::vector<int>> seen;
  for (const auto& report : owners_->shadow_reports) {
    seen[report.device().device_id()].push_back(
        Json::parse(report.services_json())[0]["properties"]["voltage"].get<int>());
  }
  std::map<std::string, std::vector<int>> recorded;
  for (const auto& record : owners_->records) {
    recorded[record.device().device_id()].push_back(RecordedVoltage(record));
  }
  ASSERT_EQ(seen.size(), 4U);
  ASSERT_EQ(recorded.size(), 4U);
  for (const auto& by_owner : {seen, recorded}) {
    for (const auto& [device, values] : by_owner) {
      ASSERT_EQ(values.size(), static_cast<size_t>(kPerDevice)) << device;
      for (int i = 0; i < kPerDevice; ++i) {
        EXPECT_EQ(values[static_cast<size_t>(i)], i) << device;
      }
    }
  }
  EXPECT_EQ(metrics_.unacknowledged.Value(), 0);
  EXPECT_EQ(metrics_.queue_depth.Value(), 0);
  EXPECT_EQ(pipeline->pending(), 0U);
  for (const char* code : {"UNAVAILABLE", "UNIMPLEMENTED"}) {
    EXPECT_GT(
        metrics_.call_errors.Add({{"target", "shadow.ReportProperties"}, {"code", code}}).Value(),
        0)
        << code;
  }
}

TEST_F(PipelineTest, SubmitNeverBlocksAndAMessageIsAcknowledgedOnlyOnceEveryOwnerHasIt) {
  owners_->Block(true);  // rule-forwarding's Ingest does not answer
  auto pipeline = Start(/*batch=*/1, /*owner_batches=*/1);
  // Far more than the lanes hold: Submit still returns at once (the broker's Receive Maximum
  // bounds what is in flight, not the pipeline).
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(pipeline->Submit(Report("p1_same", i), AckOf(std::to_string(i))));
  }
  EXPECT_EQ(pipeline->pending(), 50U);
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(owners_->mu);
        return owners_->ingest_calls == 1 && !owners_->shadow_reports.empty();
      },
      seconds(5)));
  // Shadow has some, rule-forwarding none: nothing may be acknowledged yet.
  EXPECT_FALSE(WaitUntil([&] { return !Acked().empty(); }, milliseconds(200)));
  owners_->Block(false);
  ASSERT_TRUE(WaitUntil([&] { return Acked().size() == 50; }, seconds(5)));
  std::vector<std::string> expected;
  expected.reserve(50);
  for (int i = 0; i < 50; ++i) {
    expected.push_back(std::to_string(i));
  }
  EXPECT_EQ(Acked(), expected);  // one shard: in order
  EXPECT_EQ(owners_->RecordCount(), 50U);
  EXPECT_TRUE(WaitUntil([&] { return metrics_.queue_depth.Value() == 0; }, seconds(5)));
}

TEST_F(PipelineTest, AnAlinkReplyIsPublishedOnlyOnceEveryOwnerHasTheMessage) {
  owners_->Block(true);  // rule-forwarding's Ingest does not answer
  auto pipeline = Start(/*batch=*/1, /*owner_batches=*/1);
  std::atomic<size_t> published_at_ack{99};
  ASSERT_TRUE(
      pipeline->Submit(UplinkMessage{.message_id = "a1",
                                     .kind = UplinkKind::kAlink,
                                     .device_id = "p1_n",
                                     .topic = "/sys/p1/n/thing/event/property/post",
                                     .request_id = {},
                                     .payload = R"({"id":"7","params":{"meter:voltage":230}})",
                                     .received_at_unix_ms = 1000},
                       [&] {
                         std::lock_guard lock(owners_->mu);
                         published_at_ack = owners_->published.size();
                       }));
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(owners_->mu);
        return !owners_->shadow_reports.empty();
      },
      seconds(5)));
  // Shadow has it, rule-forwarding not yet: no reply.
  EXPECT_FALSE(WaitUntil(
      [&] {
        std::lock_guard lock(owners_->mu);
        return !owners_->published.empty();
      },
      milliseconds(200)));
  owners_->Block(false);
  ASSERT_TRUE(WaitUntil([&] { return published_at_ack.load() != 99; }, seconds(5)));
  EXPECT_EQ(published_at_ack.load(), 1U);  // the reply went out before the acknowledgement
  std::lock_guard lock(owners_->mu);
  ASSERT_EQ(owners_->published.size(), 1U);
  EXPECT_EQ(owners_->published[0].first,
            "$oc/devices/p1_n/alink/sys/p1/n/thing/event/property/post_reply");
  EXPECT_EQ(Json::parse(owners_->published[0].second)["id"], "7");
  EXPECT_EQ(Json::parse(owners_->published[0].second)["code"], 200);
}

TEST_F(PipelineTest, PresenceRecordsStatusThenTellsTheOwners) {
  auto pipeline = Start();
  ASSERT_TRUE(pipeline->Submit(PresenceEvent{.message_id = "pres-1",
                                             .device_id = "p1_a",
                                             .online = true,
                                             .time = "2026-11-26T17:42:48.123Z",
                                             .reason = "connect",
                                             .client_address = "10.0.0.1"},
                               AckOf("presence")));
  ASSERT_TRUE(pipeline->Submit(Message(UplinkKind::kShadowGet, "p1_a", "{}", "g1"), AckOf("get")));
  ASSERT_TRUE(pipeline->Submit(Message(UplinkKind::kMessageUp, "gone", "x"), AckOf("gone")));
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(owners_->mu);
        return owners_->published.size() == 1;
      },
      seconds(5)));
  pipeline->Stop(std::chrono::steady_clock::now() + seconds(5));
  EXPECT_THAT(owners_->status_events, ::testing::ElementsAre("p1_a+"));
  EXPECT_EQ(owners_->shadow_presence, 1);
  EXPECT_EQ(owners_->command_presence, 1);
  ASSERT_EQ(owners_->records.size(), 1U);
  EXPECT_EQ(owners_->records[0].resource(), "device.status");
  EXPECT_EQ(owners_->records[0].message_id(), "pres-1");  // the broker's id, not a new one
  EXPECT_EQ(Json::parse(owners_->records[0].envelope_json())["notify_data"]["body"]["status"],
            "ONLINE");
  EXPECT_EQ(owners_->published[0].first, "$oc/devices/p1_a/sys/shadow/get/response/request_id=g1");
  EXPECT_EQ(metrics_.uplink_rejected.Add({{"reason", "unknown_device"}}).Value(), 1);
  // An unknown device's message is finished too: nothing is left for the broker to resend.
  EXPECT_THAT(Acked(), ::testing::UnorderedElementsAre("presence", "get", "gone"));
}

TEST_F(PipelineTest, AnOwnerThatHangsDoesNotHoldUpTheOthers) {
  owners_->Block(true);  // rule-forwarding's Ingest does not answer
  auto pipeline = Start(/*batch=*/2);
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(pipeline->Submit(Report("p1_a", i), AckOf(std::to_string(i))));
  }
  EXPECT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(owners_->mu);
        return owners_->shadow_reports.size() == 6;
      },
      seconds(5)));
  EXPECT_EQ(owners_->RecordCount(), 0U);
  EXPECT_EQ(metrics_.queue_depth.Value(), 6);  // done only once every owner has its part
  EXPECT_TRUE(Acked().empty());
  owners_->Block(false);
  EXPECT_TRUE(WaitUntil([&] { return owners_->RecordCount() == 6; }, seconds(5)));
  EXPECT_TRUE(WaitUntil([&] { return metrics_.queue_depth.Value() == 0; }, seconds(5)));
  EXPECT_EQ(Acked().size(), 6U);
}

TEST_F(PipelineTest, LargeBatchesGoInPartsInOrder) {
  // Eight messages of 900 KB of one device in one batch: over the 3 MiB a call may carry, they
  // go in parts (a gRPC server would refuse the whole with RESOURCE_EXHAUSTED for ever).
  auto pipeline = Start(/*batch=*/100, /*owner_batches=*/100);
  owners_->Block(true);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(pipeline->Submit(
        Message(UplinkKind::kMessageUp, "p1_a", "\"" + std::string(900'000, 'x') + "\"")));
  }
  ASSERT_TRUE(pipeline->Submit(Message(UplinkKind::kMessageUp, "p1_a", R"({"n":8})")));
  owners_->Block(false);
  ASSERT_TRUE(WaitUntil([&] { return owners_->RecordCount() == 9; }, seconds(10)));
  pipeline->Stop(std::chrono::steady_clock::now() + seconds(5));
  EXPECT_GE(owners_->ingest_calls, 3);
  const auto last = Json::parse(owners_->records.back().envelope_json());
  EXPECT_EQ(last["notify_data"]["body"]["content"]["n"], 8);
}

TEST_F(PipelineTest, BatchesQueuedBehindACallGoTogetherInOrderAfterRetries) {
  owners_->Block(true);
  auto pipeline = Start(/*batch=*/1, /*owner_batches=*/4);
  ASSERT_TRUE(pipeline->Submit(Report("p1_a", 0)));
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(owners_->mu);
        return owners_->ingest_calls == 1;
      },
      seconds(5)));
  // While the first call hangs, four one-message batches queue on the lane; when it answers
  // the next call fails twice, then they go together, after the first and in their order.
  for (int i = 1; i <= 4; ++i) {
    ASSERT_TRUE(pipeline->Submit(Report("p1_a", i)));
  }
  // The sender hands a batch to shadow before rule-forwarding: once shadow has the fifth,
  // the rules lane holds the second to fourth (the fifth may still be on its way).
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(owners_->mu);
        return owners_->shadow_reports.size() == 5;
      },
      seconds(5)));
  {
    std::lock_guard lock(owners_->mu);
    owners_->failures = 2;
  }
  owners_->Block(false);
  ASSERT_TRUE(WaitUntil([&] { return owners_->RecordCount() == 5; }, seconds(5)));
  pipeline->Stop(std::chrono::steady_clock::now() + seconds(5));
  std::vector<int> values;
  for (const auto& record : owners_->records) {
    values.push_back(RecordedVoltage(record));
  }
  EXPECT_THAT(values, ::testing::ElementsAre(0, 1, 2, 3, 4));
  // The first call, then the merged one (and the fifth alone if it came late); the failed
  // attempts return before they count.
  EXPECT_GE(owners_->ingest_calls, 2);
  EXPECT_LE(owners_->ingest_calls, 3);
  EXPECT_EQ(metrics_.unacknowledged.Value(), 0);
}

TEST_F(PipelineTest, StopLeavesWhatCouldNotBeHandedOnUnacknowledged) {
  owners_->failures = 1'000'000;
  auto pipeline = Start();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(pipeline->Submit(Message(UplinkKind::kMessageUp, "p1_a", "x"), AckOf("x")));
  }
  pipeline->Stop(std::chrono::steady_clock::now() + milliseconds(100));
  EXPECT_EQ(metrics_.unacknowledged.Value(), 5);
  EXPECT_TRUE(Acked().empty());  // the broker delivers them again
  EXPECT_FALSE(pipeline->Submit(Message(UplinkKind::kMessageUp, "p1_a", "x"), AckOf("late")));
  EXPECT_TRUE(Acked().empty());
}

TEST_F(PipelineTest, AcknowledgementsWaitForEarlierBatchesEvenWhenLaterOnesFinishFirst) {
  // A later batch with nothing for the blocked owner (an unknown device's message) finishes
  // first; it is acknowledged only after the earlier one.
  const auto shard_of = [](const std::string& id) { return std::hash<std::string>{}(id) % 3; };
  std::string device = "p1_a";
  for (char c = 'a'; shard_of(device) != shard_of("gone") && c <= 'z'; ++c) {
    device = std::string("p1_") + c;
  }
  ASSERT_EQ(shard_of(device), shard_of("gone"));
  owners_->Block(true);  // rule-forwarding's Ingest does not answer
  auto pipeline = Start(/*batch=*/1);
  ASSERT_TRUE(pipeline->Submit(Report(device, 1), AckOf("report")));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pipeline->Submit(Message(UplinkKind::kMessageUp, "gone", "x"), AckOf("gone")));
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        return metrics_.uplink_rejected.Add({{"reason", "unknown_device"}}).Value() == 3;
      },
      seconds(5)));
  EXPECT_FALSE(WaitUntil([&] { return !Acked().empty(); }, milliseconds(100)));
  owners_->Block(false);
  EXPECT_TRUE(WaitUntil([&] { return Acked().size() == 4; }, seconds(5)));
  EXPECT_THAT(Acked(), ::testing::ElementsAre("report", "gone", "gone", "gone"));
}

TEST_F(PipelineTest, ARecordAnOwnerRefusesIsCountedForwardedAsValidationFailedAndNotRetried) {
  auto pipeline = Start(/*batch=*/10);
  std::vector<UplinkMessage> reports;
  reports.reserve(5);
  for (int i = 0; i < 5; ++i) {
    reports.push_back(Report(i % 2 == 0 ? "p1_a" : "p1_b", i));
  }
  owners_->refused = {reports[2].message_id};  // shadow and rule-forwarding both refuse it
  for (auto& report : reports) {
    ASSERT_TRUE(pipeline->Submit(report, AckOf(report.message_id)));
  }
  ASSERT_TRUE(WaitUntil([&] { return Acked().size() == 5; }, seconds(5)));
  pipeline->Stop(std::chrono::steady_clock::now() + seconds(5));
  // The others were taken; the refused one by nobody, and it was not sent again.
  EXPECT_EQ(owners_->shadow_reports.size(), 4U);
  std::vector<std::string> failed;
  size_t properties = 0;
  for (const auto& record : owners_->records) {
    if (record.event() == "validation_failed") {
      failed.push_back(record.message_id());
      const auto body = Json::parse(record.envelope_json())["notify_data"]["body"];
      EXPECT_EQ(body["reason"], "invalid_property");
      EXPECT_EQ(record.device().device_id(), "p1_a");
      EXPECT_THAT(body["refused_by"].get<std::string>(),
                  ::testing::AnyOf("shadow", "rule-forwarding"));
    } else {
      ++properties;
    }
  }
  EXPECT_EQ(properties, 4U);
  // One validation_failed per owner that refused it, with ids derived from the record's.
  EXPECT_THAT(failed,
              ::testing::UnorderedElementsAre(reports[2].message_id + "/rejected/shadow",
                                              reports[2].message_id + "/rejected/rule-forwarding"));
  EXPECT_EQ(metrics_.uplink_rejected.Add({{"reason", "invalid_property"}}).Value(), 2);
  EXPECT_TRUE(dead_letters_->Letters().empty());
}

TEST_F(PipelineTest, APoisonRecordGoesToTheDeadLettersAndTheRestOfTheShardMovesOn) {
  dead_letters_->unavailable = 2;  // PostgreSQL hiccups: the dead letter is retried, not lost
  auto pipeline = Start(/*batch=*/8);
  std::vector<UplinkMessage> messages;
  messages.reserve(8);
  for (int i = 0; i < 8; ++i) {
    messages.push_back(
        Message(UplinkKind::kMessageUp, i % 2 == 0 ? "p1_a" : "p1_b", std::to_string(i)));
  }
  owners_->poison = {messages[5].message_id};
  for (auto& message : messages) {
    ASSERT_TRUE(pipeline->Submit(message, AckOf(message.message_id)));
  }
  ASSERT_TRUE(WaitUntil([&] { return Acked().size() == 8; }, seconds(10)));
  ASSERT_EQ(dead_letters_->Letters().size(), 1U);
  const DeadLetter letter = dead_letters_->Letters()[0];
  EXPECT_EQ(letter.message_id, messages[5].message_id);
  EXPECT_EQ(letter.device.device_id(), "p1_b");
  EXPECT_EQ(letter.target, Target::kRuleIngest);
  EXPECT_EQ(letter.code, "INVALID_ARGUMENT");
  EXPECT_EQ(letter.attempts, 2);
  EXPECT_EQ(Json::parse(letter.request_json)["records"].size(), 1U);
  EXPECT_EQ(metrics_.dead_letters.Add({{"target", "rule_forwarding.Ingest"}}).Value(), 1);
  // Every other record reached rule-forwarding, each device's in order.
  std::map<std::string, std::vector<std::string>> taken;
  for (const auto& record : owners_->records) {
    taken[record.device().device_id()].push_back(
        Json::parse(record.envelope_json())["notify_data"]["body"]["content"].dump());
  }
  EXPECT_THAT(taken["p1_a"], ::testing::ElementsAre("0", "2", "4", "6"));
  EXPECT_THAT(taken["p1_b"], ::testing::ElementsAre("1", "3", "7"));
  // The shard keeps going after it.
  ASSERT_TRUE(pipeline->Submit(Message(UplinkKind::kMessageUp, "p1_b", "9"), AckOf("after")));
  EXPECT_TRUE(WaitUntil([&] { return Acked().size() == 9; }, seconds(5)));
}

TEST_F(PipelineTest, RecordsCarryTheBrokersMessageIdAndDeterministicSubIds) {
  auto pipeline = Start();
  UplinkMessage report = Message(
      UplinkKind::kPropertiesReport, "p1_a",
      R"({"services":[{"service_id":"meter","properties":{"voltage":230,"state":"BROKEN"}}]})");
  report.message_id = "b00t-41";
  ASSERT_TRUE(pipeline->Submit(report, AckOf("r")));
  ASSERT_TRUE(WaitUntil([&] { return Acked().size() == 1; }, seconds(5)));
  pipeline->Stop(std::chrono::steady_clock::now() + seconds(5));
  ASSERT_EQ(owners_->shadow_reports.size(), 1U);
  EXPECT_EQ(owners_->shadow_reports[0].message_id(), "b00t-41");
  std::vector<std::string> ids;
  for (const auto& record : owners_->records) {
    ids.push_back(record.message_id());
  }
  EXPECT_THAT(ids, ::testing::ElementsAre("b00t-41/validation_failed", "b00t-41"));
}

}  // namespace
}  // namespace iot::device_gateway
