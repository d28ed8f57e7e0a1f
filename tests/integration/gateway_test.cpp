// device-gateway across real processes: Mosquitto with the iot_auth plugin, thing-model
// (PostgreSQL, Redis projection), one or two device-gateway processes, devices as MQTT clients.
// The owners of device data (shadow, command-dispatch, rule-forwarding) are gRPC servers in this
// test process that record what they receive and can fail on demand.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/common/mqtt.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"
#include "iot/testing/http.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace tm = iot::thing_model::v1;
namespace dg = iot::device_gateway::v1;
using iot::testing::WaitUntil;
using Json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kSecretKey(64, 'd');
const std::string kAdminKey = "gateway-test-admin-key-0123456789";
const std::string kServiceKey = "gateway-test-service-key-0123456789";
const std::string kGatewayPassword = "gateway-password-for-tests";

/// Makes an owner RPC fail with `code` from Start() to Stop().
struct Outage {
  std::atomic<bool> on{false};
  std::atomic<int> code{grpc::StatusCode::UNAVAILABLE};
  std::atomic<int> failures{0};

  void Start(grpc::StatusCode status) {
    code = status;
    on = true;
  }
  void Stop() { on = false; }
  bool Failing() {
    if (on.load()) {
      ++failures;
      return true;
    }
    return false;
  }
  grpc::Status Status() const {
    return {static_cast<grpc::StatusCode>(code.load()), "owner down (test)"};
  }
};

/// What the owners received, in arrival order.
struct Received {
  std::mutex mu;
  std::vector<shadow::v1::PropertyReport> reports;
  std::vector<command_dispatch::v1::DeviceResponse> responses;
  std::vector<shadow::v1::PropertySetResult> set_results;
  std::vector<rule_forwarding::v1::ForwardRecord> records;
  std::vector<dg::PresenceEvent> shadow_presence;
  std::vector<dg::PresenceEvent> command_presence;
  std::vector<std::string> bearer;  ///< authorization of every call

  template <typename T>
  size_t Count(const std::vector<T>& v) {
    std::lock_guard lock(mu);
    return v.size();
  }
  std::vector<rule_forwarding::v1::ForwardRecord> Records(const std::string& resource,
                                                          const std::string& event = "") {
    std::lock_guard lock(mu);
    std::vector<rule_forwarding::v1::ForwardRecord> out;
    for (const auto& r : records) {
      if (r.resource() == resource && (event.empty() || r.event() == event)) {
        out.push_back(r);
      }
    }
    return out;
  }
  void Note(grpc::ServerContext* context) {
    const auto& md = context->client_metadata();
    auto it = md.find("authorization");
    bearer.emplace_back(it == md.end() ? "" : std::string(it->second.data(), it->second.size()));
  }
};

class FakeShadow final : public shadow::v1::InternalShadow::Service {
 public:
  explicit FakeShadow(Received& r) : r_(r) {}
  grpc::Status ReportProperties(grpc::ServerContext* c,
                                const shadow::v1::ReportPropertiesRequest* request,
                                dg::IngestAck*) override {
    if (outage.Failing()) {
      return outage.Status();
    }
    std::lock_guard lock(r_.mu);
    r_.Note(c);
    r_.reports.insert(r_.reports.end(), request->reports().begin(), request->reports().end());
    return grpc::Status::OK;
  }
  grpc::Status GetDeviceShadowForDevice(grpc::ServerContext*,
                                        const shadow::v1::DeviceShadowGetRequest* request,
                                        shadow::v1::DeviceShadowGetResponse* response) override {
    response->set_payload_json(Json{
        {"object_device_id", request->device().device_id()},
        {"shadow",
         {{{"service_id", "meter"},
           {"desired", {{"properties", {{"relay_state", "OFF"}}}}},
           {"version", 7}}}}}.dump());
    return grpc::Status::OK;
  }
  grpc::Status CompletePropertySet(grpc::ServerContext*,
                                   const shadow::v1::PropertySetResult* result,
                                   dg::IngestAck*) override {
    std::lock_guard lock(r_.mu);
    r_.set_results.push_back(*result);
    return grpc::Status::OK;
  }
  grpc::Status ReportPresence(grpc::ServerContext*, const dg::PresenceEvents* events,
                              dg::IngestAck*) override {
    std::lock_guard lock(r_.mu);
    r_.shadow_presence.insert(r_.shadow_presence.end(), events->events().begin(),
                              events->events().end());
    return grpc::Status::OK;
  }
  Outage outage;

 private:
  Received& r_;
};

class FakeCommands final : public command_dispatch::v1::InternalCommandDispatch::Service {
 public:
  explicit FakeCommands(Received& r) : r_(r) {}
  grpc::Status CompleteRequests(grpc::ServerContext*,
                                const command_dispatch::v1::CompleteRequestsRequest* request,
                                dg::IngestAck*) override {
    std::lock_guard lock(r_.mu);
    r_.responses.insert(r_.responses.end(), request->responses().begin(),
                        request->responses().end());
    return grpc::Status::OK;
  }
  grpc::Status ReportPresence(grpc::ServerContext*, const dg::PresenceEvents* events,
                              dg::IngestAck*) override {
    std::lock_guard lock(r_.mu);
    r_.command_presence.insert(r_.command_presence.end(), events->events().begin(),
                               events->events().end());
    return grpc::Status::OK;
  }

 private:
  Received& r_;
};

class FakeRules final : public rule_forwarding::v1::InternalIngest::Service {
 public:
  explicit FakeRules(Received& r) : r_(r) {}
  grpc::Status Ingest(grpc::ServerContext*, const rule_forwarding::v1::IngestRequest* request,
                      dg::IngestAck* ack) override {
    if (outage.Failing()) {
      return outage.Status();
    }
    if (const int delay = delay_ms.load(); delay > 0) {
      std::this_thread::sleep_for(milliseconds(delay));
    }
    std::lock_guard lock(r_.mu);
    // A request holding a record of the poison device is refused whole, every time.
    for (const auto& record : request->records()) {
      if (record.device().device_id() == poison_device && record.event() == "report") {
        ++poisoned_calls;
        return {grpc::StatusCode::INVALID_ARGUMENT, "records[].envelope_json: poison (test)"};
      }
    }
    for (const auto& record : request->records()) {
      if (record.device().device_id() == refused_device && record.event() == "report") {
        auto* rejected = ack->add_rejected();
        rejected->set_message_id(record.message_id());
        rejected->set_device_id(record.device().device_id());
        rejected->set_reason("invalid_record");
        rejected->set_detail("envelope_json: refused (test)");
        continue;
      }
      r_.records.push_back(record);
    }
    ++calls;
    return grpc::Status::OK;
  }
  Outage outage;
  std::atomic<int> delay_ms{0};
  std::atomic<int> calls{0};
  std::atomic<int> poisoned_calls{0};
  std::string refused_device;  ///< its reports are listed in IngestAck.rejected
  std::string poison_device;   ///< a request with one of its reports fails INVALID_ARGUMENT

 private:
  Received& r_;
};

/// The three owners on one gRPC server.
class FakeOwners {
 public:
  FakeOwners() : shadow(received), commands(received), rules(received) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&shadow);
    builder.RegisterService(&commands);
    builder.RegisterService(&rules);
    server_ = builder.BuildAndStart();
  }
  ~FakeOwners() { server_->Shutdown(std::chrono::system_clock::now() + seconds(1)); }
  [[nodiscard]] std::string address() const { return fmt::format("127.0.0.1:{}", port_); }

  Received received;
  FakeShadow shadow;
  FakeCommands commands;
  FakeRules rules;

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

double Metric(const iot::testing::ServiceProcess& gateway, const std::string& name,
              const std::map<std::string, std::string>& labels = {}) {
  auto series = iot::testing::ParsePrometheusText(gateway.Metrics());
  return series.ok() ? iot::testing::SumSeries(*series, name, labels) : -1;
}

class GatewayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new iot::testing::TestRedis();
    // The delivery settings of deploy/mosquitto/mosquitto.conf: mosquitto's default
    // max_queued_messages (1000) would drop what it queues for a gateway that is restarting.
    broker_ = new iot::testing::TestMosquitto(
        iot::testing::AuthPluginConfig(
            redis_->Url(), kSecretKey,
            iot::testing::ServiceAccountEntry("gateway", "salt", kGatewayPassword)) +
        "\nmax_queued_messages 1000000\nmax_queued_bytes 536870912\nsys_interval 1\n");
    thing_model_ = new iot::testing::ThingModelProcess({.redis_url = redis_->Url(),
                                                        .secret_key = kSecretKey,
                                                        .admin_key = kAdminKey,
                                                        .service_key = kServiceKey,
                                                        .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    auto channel = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
    tm::CreateProductRequest product;
    product.set_product_json(
        iot::testing::ReadTextFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    tm::Product created;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, kAdminKey);
    ASSERT_TRUE(tm::Products::NewStub(channel)->CreateProduct(&ctx, product, &created).ok());
  }
  static void TearDownTestSuite() {
    delete thing_model_;
    delete broker_;
    delete redis_;
  }

  /// A new device of the smart meter product: its id and secret.
  std::pair<std::string, std::string> AddDevice(const std::string& product_id = "smartmeter01") {
    static std::atomic<int> n{0};
    auto channel = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
    tm::AddDeviceRequest add;
    add.set_product_id(product_id);
    add.set_node_id(fmt::format("n{}_{}", ::getpid(), ++n));
    tm::AddDeviceResponse added;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, kAdminKey);
    EXPECT_TRUE(tm::Devices::NewStub(channel)->AddDevice(&ctx, add, &added).ok());
    return {added.device().device_id(), added.secret()};
  }

  /// A device connected as Huawei's SDKs connect (sign type 0); it never subscribes.
  std::unique_ptr<common::MqttClient> Device(const std::string& id, const std::string& secret,
                                             std::vector<common::MqttMessage>* inbox = nullptr,
                                             std::mutex* inbox_mu = nullptr,
                                             const std::string& broker_url = {}) {
    const auto signed_in = iot::testing::SignDevice(id, secret);
    auto client =
        common::MqttClient::Create({.url = broker_url.empty() ? broker_->Url() : broker_url,
                                    .client_id = signed_in.client_id,
                                    .username = signed_in.username,
                                    .password = signed_in.password});
    EXPECT_TRUE(client.ok()) << client.status();
    if (inbox != nullptr) {
      (*client)->SetMessageHandler([inbox, inbox_mu](const common::MqttMessage& m) {
        std::lock_guard lock(*inbox_mu);
        inbox->push_back(m);
      });
    }
    EXPECT_TRUE((*client)->Start().ok());
    EXPECT_TRUE((*client)->WaitConnected(seconds(10)));
    return *std::move(client);
  }

  std::unique_ptr<iot::testing::ServiceProcess> Gateway(
      const std::string& client_id, const std::map<std::string, std::string>& extra = {}) {
    std::map<std::string, std::string> env = {
        {"IOT_MQTT_URL",
         fmt::format("mqtt://gateway:{}@127.0.0.1:{}", kGatewayPassword, broker_->port())},
        {"IOT_REDIS_URL", redis_->Url()},
        {"IOT_THING_MODEL_ADDR", thing_model_->address()},
        {"IOT_SHADOW_ADDR", owners_.address()},
        {"IOT_COMMAND_DISPATCH_ADDR", owners_.address()},
        {"IOT_RULE_FORWARDING_ADDR", owners_.address()},
        {"IOT_SERVICE_API_KEY", kServiceKey},
        {"IOT_PG_URL", thing_model_->pg_url()},  // schema device_gateway: dead letters
        {"IOT_DEVICE_GATEWAY_MQTT_CLIENT_ID", client_id},
        // Each test has its own share group, so no test sees another's queued messages.
        {"IOT_DEVICE_GATEWAY_SHARE_GROUP", share_group_},
    };
    for (auto& [k, v] : extra) {
      env[k] = v;
    }
    auto gateway = std::make_unique<iot::testing::ServiceProcess>(
        iot::testing::ServiceProcessOptions{.binary = "device-gateway",
                                            .env_prefix = "IOT_DEVICE_GATEWAY",
                                            .env = env,
                                            .args = {}});
    EXPECT_TRUE(gateway->WaitServing()) << gateway->process().Log();
    return gateway;
  }

  /// Publishes a QoS 1 message and waits until the broker acknowledged it.
  static void Publish(common::MqttClient& device, const std::string& topic,
                      const std::string& payload) {
    auto rc = device.PublishAndWait(topic, payload, 1, seconds(10));
    ASSERT_TRUE(rc.ok()) << rc.status();
    ASSERT_LT(*rc, 0x80) << topic;
  }

  static std::string Report(int voltage) {
    return fmt::format(R"({{"services":[{{"service_id":"meter","properties":{{"voltage":{}}}}}]}})",
                       voltage);
  }

  static iot::testing::TestRedis* redis_;
  static iot::testing::TestMosquitto* broker_;
  static iot::testing::ThingModelProcess* thing_model_;
  /// What the owners took first is every message of `devices` once (rounds 0 .. total - 1), in
  /// each device's order.
  void ExpectEveryMessageOnceInOrder(
      const std::vector<std::pair<std::string, std::unique_ptr<common::MqttClient>>>& devices,
      int total) {
    // At least once: a message the broker delivers again (a hand-over whose acknowledgements had
    // not reached it) keeps its id, and owners skip it by that id; what they take first is every
    // message once, in the device's order.
    std::map<std::string, std::vector<int>> order;
    std::set<std::string> seen;
    size_t redelivered = 0;
    for (const auto& r : owners_.received.Records("device.message")) {
      if (!seen.insert(r.message_id()).second) {
        ++redelivered;
        continue;
      }
      order[r.device().device_id()].push_back(
          Json::parse(r.envelope_json())["notify_data"]["body"]["content"].get<int>());
    }
    std::printf("[ two replicas ] %zu messages, %zu delivered again with their ids\n", seen.size(),
                redelivered);
    std::vector<int> expected(static_cast<size_t>(total));
    std::iota(expected.begin(), expected.end(), 0);
    for (const auto& [id, client] : devices) {
      const auto& got = order[id];
      const auto mismatch = std::mismatch(got.begin(), got.end(), expected.begin(), expected.end());
      EXPECT_EQ(got, expected) << id << ": " << got.size() << " received, " << expected.size()
                               << " expected, first difference at "
                               << (mismatch.first - got.begin()) << ": "
                               << (mismatch.first == got.end() ? -1 : *mismatch.first)
                               << " instead of "
                               << (mismatch.second == expected.end() ? -1 : *mismatch.second);
    }
  }

  FakeOwners owners_;
  std::string share_group_ =
      fmt::format("gw{}", ::testing::UnitTest::GetInstance()->random_seed() + std::rand());
};

iot::testing::TestRedis* GatewayTest::redis_ = nullptr;
iot::testing::TestMosquitto* GatewayTest::broker_ = nullptr;
iot::testing::ThingModelProcess* GatewayTest::thing_model_ = nullptr;

TEST_F(GatewayTest, ReportsReachShadowAndRulesInPerDeviceOrder) {
  auto gateway = Gateway("gw-order", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"}});
  constexpr int kReports = 100;
  std::vector<std::pair<std::string, std::unique_ptr<common::MqttClient>>> devices;
  for (int d = 0; d < 3; ++d) {
    auto [id, secret] = AddDevice();
    devices.emplace_back(id, Device(id, secret));
  }
  for (int i = 0; i < kReports; ++i) {
    for (auto& [id, client] : devices) {
      ASSERT_TRUE(
          client->Publish("$oc/devices/" + id + "/sys/properties/report", Report(i), 1).ok());
    }
  }
  ASSERT_TRUE(
      WaitUntil([&] { return owners_.received.Count(owners_.received.reports) == 3 * kReports; },
                seconds(30)))
      << owners_.received.Count(owners_.received.reports) << gateway->process().Log();
  ASSERT_TRUE(
      WaitUntil([&] { return owners_.received.Records("device.property").size() == 3 * kReports; },
                seconds(10)));

  std::map<std::string, std::vector<int>> shadow_order;
  {
    std::lock_guard lock(owners_.received.mu);
    for (const auto& r : owners_.received.reports) {
      EXPECT_EQ(r.device().product_id(), "smartmeter01");
      EXPECT_FALSE(r.device().tenant_id().empty());
      shadow_order[r.device().device_id()].push_back(
          Json::parse(r.services_json())[0]["properties"]["voltage"].get<int>());
    }
    for (const auto& bearer : owners_.received.bearer) {
      EXPECT_EQ(bearer, "Bearer " + kServiceKey);
    }
  }
  std::map<std::string, std::vector<int>> rule_order;
  for (const auto& r : owners_.received.Records("device.property")) {
    const auto envelope = Json::parse(r.envelope_json());
    EXPECT_EQ(envelope["resource"], "device.property");
    EXPECT_EQ(envelope["event"], "report");
    EXPECT_EQ(envelope["notify_data"]["header"]["product_id"], "smartmeter01");
    rule_order[r.device().device_id()].push_back(
        envelope["notify_data"]["body"]["services"][0]["properties"]["voltage"].get<int>());
  }
  std::vector<int> expected(kReports);
  for (int i = 0; i < kReports; ++i) {
    expected[static_cast<size_t>(i)] = i;
  }
  for (auto& [id, client] : devices) {
    EXPECT_EQ(shadow_order[id], expected) << id;
    EXPECT_EQ(rule_order[id], expected) << id;
  }
  EXPECT_EQ(Metric(*gateway, "iot_gateway_uplink_messages_total", {{"kind", "properties_report"}}),
            3 * kReports);
}

// Not a benchmark with a bound (timings are never asserted): prints the end-to-end rate of
// validated reports through one gateway to the test owners, for the record.
TEST_F(GatewayTest, ThroughputOfValidatedReportsIsPrinted) {
  auto gateway = Gateway("gw-rate", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"}});
  constexpr int kDevices = 10;
  constexpr int kReports = 1000;
  std::vector<std::pair<std::string, std::unique_ptr<common::MqttClient>>> devices;
  for (int d = 0; d < kDevices; ++d) {
    auto [id, secret] = AddDevice();
    devices.emplace_back(id, Device(id, secret));
  }
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kReports; ++i) {
    for (auto& [id, client] : devices) {
      ASSERT_TRUE(
          client->Publish("$oc/devices/" + id + "/sys/properties/report", Report(i % 480), 1).ok());
    }
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        return owners_.received.Records("device.property").size() ==
               static_cast<size_t>(kDevices * kReports);
      },
      seconds(60)));
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "[ gateway rate ] %d validated reports from %d devices to shadow + rule-forwarding "
      "in %.2f s: %.0f reports/s\n",
      kDevices * kReports, kDevices, elapsed, kDevices * kReports / elapsed);
  EXPECT_EQ(owners_.received.Count(owners_.received.reports),
            static_cast<size_t>(kDevices * kReports));
}

TEST_F(GatewayTest, BadUplinkIsRejectedCountedAndForwardedAsValidationFailed) {
  auto gateway = Gateway("gw-reject", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "20"},
                                       {"IOT_DEVICE_GATEWAY_MAX_PAYLOAD_BYTES", "2000"},
                                       {"IOT_DEVICE_GATEWAY_MAX_REPORT_BYTES", "1000"}});
  auto [id, secret] = AddDevice();
  auto device = Device(id, secret);
  const std::string base = "$oc/devices/" + id + "/sys/";
  // One invalid property (voltage above max 480) next to a valid one.
  Publish(*device, base + "properties/report",
          R"({"services":[{"service_id":"meter","properties":{"voltage":9999,"current":5}}]})");
  Publish(*device, base + "properties/report", "{not json");
  Publish(*device, base + "properties/report", std::string(1500, ' ') + Report(1));
  Publish(*device, base + "messages/up", std::string(2500, 'x'));
  Publish(*device, base + "events/up",
          R"({"services":[{"service_id":"meter","event_type":"no_such_event","paras":{}}]})");
  // An unknown topic below the relay prefix (devices cannot publish one: a service account can).
  auto service = common::MqttClient::Create({.url = broker_->Url(),
                                             .client_id = "gw-test-injector",
                                             .username = "gateway",
                                             .password = kGatewayPassword});
  ASSERT_TRUE(service.ok());
  ASSERT_TRUE((*service)->Start().ok());
  ASSERT_TRUE((*service)->WaitConnected(seconds(10)));
  auto rc = (*service)->PublishAndWait("iot/up/0/" + id + "/sys/bogus/topic", "{}", 1, seconds(10));
  ASSERT_TRUE(rc.ok());

  ASSERT_TRUE(WaitUntil(
      [&] { return owners_.received.Records("device.event", "validation_failed").size() == 6; },
      seconds(20)))
      << owners_.received.Records("device.event", "validation_failed").size()
      << gateway->process().Log();
  // The valid property of the first report passed on, alone.
  ASSERT_TRUE(WaitUntil([&] { return owners_.received.Count(owners_.received.reports) == 1; },
                        seconds(10)));
  {
    std::lock_guard lock(owners_.received.mu);
    EXPECT_EQ(Json::parse(owners_.received.reports[0].services_json())[0]["properties"],
              Json::parse(R"({"current":5})"));
  }
  std::multiset<std::string> reasons;
  for (const auto& r : owners_.received.Records("device.event", "validation_failed")) {
    const auto body = Json::parse(r.envelope_json())["notify_data"]["body"];
    reasons.insert(body["reason"].get<std::string>());
    EXPECT_EQ(r.device().device_id(), id);
  }
  EXPECT_EQ(reasons, (std::multiset<std::string>{"invalid_property", "malformed", "too_large",
                                                 "too_large", "invalid_event", "unknown_topic"}));

  // Over the rate (20/s, burst 20): a burst of 60 gets some rejected, counted, forwarded.
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(device->Publish(base + "messages/up", fmt::format("m{}", i), 1).ok());
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Metric(*gateway, "iot_gateway_uplink_rejected_total", {{"reason", "rate_limited"}}) >
               0;
      },
      seconds(10)));
  ASSERT_TRUE(WaitUntil(
      [&] {
        const double limited =
            Metric(*gateway, "iot_gateway_uplink_rejected_total", {{"reason", "rate_limited"}});
        return owners_.received.Records("device.message").size() + static_cast<size_t>(limited) ==
               60;
      },
      seconds(10)));
  for (const auto& [reason, count] : std::map<std::string, double>{{"invalid_property", 1},
                                                                   {"malformed", 1},
                                                                   {"too_large", 2},
                                                                   {"invalid_event", 1},
                                                                   {"unknown_topic", 1}}) {
    EXPECT_EQ(Metric(*gateway, "iot_gateway_uplink_rejected_total", {{"reason", reason}}), count)
        << reason;
  }
  EXPECT_NE(gateway->process().Log().find(id), std::string::npos);  // logged with the device id
}

TEST_F(GatewayTest, OwnersDownForAWhileLoseNothingOnceTheyReturn) {
  auto gateway = Gateway("gw-outage", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"}});
  auto [id, secret] = AddDevice();
  auto device = Device(id, secret);
  // The device's connect event first (it shares the device's shard, ahead of its reports).
  ASSERT_TRUE(
      WaitUntil([&] { return !owners_.received.Records("device.status").empty(); }, seconds(10)));
  owners_.shadow.outage.Start(grpc::StatusCode::UNAVAILABLE);
  owners_.rules.outage.Start(grpc::StatusCode::UNIMPLEMENTED);  // not built yet
  constexpr int kReports = 50;
  for (int i = 0; i < kReports; ++i) {
    Publish(*device, "$oc/devices/" + id + "/sys/properties/report", Report(i));
  }
  // Shadow down for a few retries; then rule-forwarding, which the shard reaches only after.
  ASSERT_TRUE(WaitUntil([&] { return owners_.shadow.outage.failures >= 3; }, seconds(20)))
      << gateway->process().Log();
  owners_.shadow.outage.Stop();
  ASSERT_TRUE(WaitUntil([&] { return owners_.rules.outage.failures >= 3; }, seconds(20)));
  EXPECT_TRUE(owners_.received.Records("device.property").empty());
  owners_.rules.outage.Stop();
  ASSERT_TRUE(WaitUntil(
      [&] { return owners_.received.Count(owners_.received.reports) == kReports; }, seconds(30)))
      << gateway->process().Log();
  ASSERT_TRUE(WaitUntil(
      [&] { return owners_.received.Records("device.property").size() == kReports; }, seconds(10)));
  EXPECT_GT(owners_.shadow.outage.failures.load(), 0);
  EXPECT_GT(owners_.rules.outage.failures.load(), 0);
  std::lock_guard lock(owners_.received.mu);
  for (int i = 0; i < kReports; ++i) {
    EXPECT_EQ(Json::parse(owners_.received.reports[static_cast<size_t>(i)]
                              .services_json())[0]["properties"]["voltage"],
              i);
  }
}

TEST_F(GatewayTest, TwoReplicasSplitThePartitionsAndKeepEveryDevicesOrder) {
  // Each replica consumes the uplink partitions it holds (broker/README.md, Uplink): they split
  // the load, and a device's messages stay in order while a replica joins and while one leaves
  // (a partition is handed over only once what was taken from it is handed on).
  const std::map<std::string, std::string> env = {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"},
                                                  {"IOT_DEVICE_GATEWAY_PARTITION_LEASE", "1s"}};
  auto first = Gateway("gw-split-1", env);
  EXPECT_EQ(Metric(*first, "iot_gateway_partitions_owned"), 16);
  EXPECT_EQ(Metric(*first, "iot_gateway_partitions_total"), 16);
  constexpr int kDevices = 8;
  constexpr int kRoundsPerPhase = 50;
  std::vector<std::pair<std::string, std::unique_ptr<common::MqttClient>>> devices;
  for (int d = 0; d < kDevices; ++d) {
    auto [id, secret] = AddDevice();
    devices.emplace_back(id, Device(id, secret));
  }
  // The devices publish round after round (each message acknowledged by the broker before the
  // next) until told to stop, across every change below.
  std::atomic<int> rounds{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> refused{false};
  std::thread publisher([&] {
    while (!stop.load()) {
      for (auto& [id, client] : devices) {
        auto rc = client->PublishAndWait("$oc/devices/" + id + "/sys/messages/up",
                                         fmt::format("{}", rounds.load()), 1, seconds(10));
        refused = refused || !rc.ok() || *rc >= 0x80;
      }
      ++rounds;
    }
  });
  const auto rounds_after = [&](int from) {
    return WaitUntil([&] { return rounds.load() >= from + kRoundsPerPhase; }, seconds(30));
  };
  auto owned = [](iot::testing::ServiceProcess& gateway) {
    return Metric(gateway, "iot_gateway_partitions_owned");
  };

  EXPECT_TRUE(rounds_after(0));
  // A second replica joins while devices keep publishing: 8 partitions each.
  std::unique_ptr<iot::testing::ServiceProcess> second = Gateway("gw-split-2", env);
  EXPECT_TRUE(WaitUntil([&] { return owned(*first) == 8 && owned(*second) == 8; }, seconds(20)))
      << owned(*first) << " / " << owned(*second) << second->process().Log();
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Metric(*second, "iot_gateway_uplink_messages_total", {{"kind", "message_up"}}) > 0;
      },
      seconds(20)))
      << "the second replica handled nothing";
  EXPECT_GT(Metric(*first, "iot_gateway_uplink_messages_total", {{"kind", "message_up"}}), 0);
  EXPECT_GE(Metric(*first, "iot_gateway_partition_changes_total", {{"event", "released"}}), 8);
  EXPECT_TRUE(rounds_after(rounds.load()));

  // The second leaves (SIGTERM: drains, then frees its partitions) while devices publish.
  second.reset();
  EXPECT_TRUE(WaitUntil([&] { return owned(*first) == 16; }, seconds(20))) << owned(*first);
  EXPECT_TRUE(rounds_after(rounds.load()));
  stop = true;
  publisher.join();
  ASSERT_FALSE(refused.load());
  const int total = rounds.load();

  ASSERT_TRUE(WaitUntil(
      [&] {
        std::set<std::string> ids;
        for (const auto& r : owners_.received.Records("device.message")) {
          ids.insert(r.message_id());
        }
        return ids.size() >= static_cast<size_t>(kDevices * total);
      },
      seconds(60)))
      << owners_.received.Records("device.message").size() << first->process().Log();
  ExpectEveryMessageOnceInOrder(devices, total);
}

TEST_F(GatewayTest, KilledGatewayLosesNothingAndRedeliveriesKeepTheirIds) {
  auto gateway = Gateway("gw-kill", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"}});
  // A slow owner keeps messages in the gateway: taken from the broker, not yet acknowledged.
  owners_.rules.delay_ms = 20;
  // Named, not bound: clang 14 (clang-tidy) cannot capture a structured binding in a lambda.
  const auto [device_id, device_secret] = AddDevice();
  const std::string id = device_id;
  const std::string secret = device_secret;
  auto device = Device(id, secret);
  constexpr int kMessages = 3000;
  std::atomic<int> published{0};
  std::thread publisher([&] {
    for (int i = 0; i < kMessages; ++i) {
      auto rc = device->PublishAndWait("$oc/devices/" + id + "/sys/messages/up",
                                       fmt::format("{}", i), 1, seconds(10));
      if (rc.ok() && *rc < 0x80) {
        ++published;
      }
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return owners_.received.Records("device.message").size() > 300; },
                        seconds(30)));
  const double queued_before_kill = Metric(*gateway, "iot_gateway_uplink_queue_depth");
  // Never more than the sessions' Receive Maximum (1000) in the gateway.
  EXPECT_LE(queued_before_kill, 1000);
  gateway->Restart(/*kill=*/true);
  publisher.join();
  owners_.rules.delay_ms = 0;
  ASSERT_TRUE(gateway->WaitServing()) << gateway->process().Log();
  // A sentinel after everything: one device's messages stay in order through one gateway, so
  // once it arrives, everything the broker had for the gateway has arrived too.
  constexpr int kSentinel = -1;
  ASSERT_TRUE(device
                  ->PublishAndWait("$oc/devices/" + id + "/sys/messages/up",
                                   fmt::format("{}", kSentinel), 1, seconds(10))
                  .ok());
  auto content = [](const auto& record) {
    return Json::parse(record.envelope_json())["notify_data"]["body"]["content"]
        .template get<int>();
  };
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto records = owners_.received.Records("device.message");
        return std::any_of(records.begin(), records.end(),
                           [&](const auto& r) { return content(r) == kSentinel; });
      },
      seconds(60)))
      << gateway->process().Log();
  std::map<int, std::set<std::string>> ids;  // content -> message ids it arrived with
  size_t total = 0;
  for (const auto& r : owners_.received.Records("device.message")) {
    if (content(r) == kSentinel) {
      continue;
    }
    ids[content(r)].insert(r.message_id());
    ++total;
  }
  const int lost = published.load() - static_cast<int>(ids.size());
  std::printf(
      "[ gateway SIGKILL ] published (acknowledged by the broker): %d, handed on: %zu unique, "
      "%zu duplicates, lost: %d (taken and not yet acknowledged just before the kill: %.0f)\n",
      published.load(), ids.size(), total - ids.size(), lost, queued_before_kill);
  RecordProperty("lost", lost);
  RecordProperty("duplicates", static_cast<int>(total - ids.size()));
  EXPECT_EQ(Metric(*gateway, "iot_gateway_broker_dropped_messages"), 0);
  EXPECT_EQ(published.load(), kMessages);
  // What the broker acknowledged to the device, the owners have: the gateway acknowledges a
  // message to the broker only once every owner has it, so a killed gateway loses nothing.
  EXPECT_EQ(lost, 0);
  // A message the broker delivered again (the killed gateway had taken it) reaches the owners
  // with the id the plugin gave it, so they recognise the duplicate.
  std::set<std::string> all_ids;
  for (const auto& [value, with] : ids) {
    EXPECT_EQ(with.size(), 1U) << "message " << value << " arrived with different ids";
    all_ids.insert(with.begin(), with.end());
  }
  EXPECT_EQ(all_ids.size(), ids.size());  // and no two messages share one
  for (const auto& message_id : all_ids) {
    EXPECT_FALSE(message_id.starts_with("gw-kill")) << message_id;  // the broker's, not ours
  }
}

TEST_F(GatewayTest, OwnerOutageLongerThanTheKeepaliveKeepsTheSessionAndLosesNothing) {
  // Keepalive 5 s: the broker drops a session it hears nothing from for 7.5 s. The owners stay
  // down for longer than that while the device sends more than the gateway may hold (Receive
  // Maximum 50): the gateway's sessions keep pinging, the broker keeps the rest queued.
  auto gateway = Gateway("gw-keepalive", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"},
                                          {"IOT_DEVICE_GATEWAY_MQTT_KEEPALIVE", "5s"},
                                          {"IOT_DEVICE_GATEWAY_RECEIVE_MAXIMUM", "50"}});
  auto [id, secret] = AddDevice();
  auto device = Device(id, secret);
  ASSERT_TRUE(
      WaitUntil([&] { return !owners_.received.Records("device.status").empty(); }, seconds(10)));
  owners_.rules.outage.Start(grpc::StatusCode::UNAVAILABLE);
  owners_.shadow.outage.Start(grpc::StatusCode::UNAVAILABLE);
  const auto outage_start = std::chrono::steady_clock::now();
  constexpr int kReports = 200;
  for (int i = 0; i < kReports; ++i) {
    Publish(*device, "$oc/devices/" + id + "/sys/properties/report", Report(i));
  }
  // The gateway holds at most its Receive Maximum; the broker the rest.
  EXPECT_LE(Metric(*gateway, "iot_gateway_uplink_queue_depth"), 50);
  ASSERT_TRUE(WaitUntil(
      [&] { return std::chrono::steady_clock::now() - outage_start > seconds(12); }, seconds(20)));
  owners_.rules.outage.Stop();
  owners_.shadow.outage.Stop();
  ASSERT_TRUE(WaitUntil(
      [&] { return owners_.received.Count(owners_.received.reports) == kReports; }, seconds(60)))
      << owners_.received.Count(owners_.received.reports) << gateway->process().Log();
  ASSERT_TRUE(WaitUntil(
      [&] { return owners_.received.Records("device.property").size() == kReports; }, seconds(30)));
  {
    std::lock_guard lock(owners_.received.mu);
    for (int i = 0; i < kReports; ++i) {
      EXPECT_EQ(Json::parse(owners_.received.reports[static_cast<size_t>(i)]
                                .services_json())[0]["properties"]["voltage"],
                i);
    }
  }
  // Neither side gave up on the session.
  const std::string log = gateway->process().Log();
  EXPECT_EQ(log.find("connection lost"), std::string::npos) << log;
  EXPECT_EQ(log.find("no PINGRESP"), std::string::npos) << log;
  EXPECT_EQ(iot::testing::ReadTextFile(broker_->dir() / "mosquitto.log").find("exceeded timeout"),
            std::string::npos);
  EXPECT_GT(owners_.rules.outage.failures.load(), 0);
}

TEST_F(GatewayTest, OneRefusedRecordInAMergedBatchRejectsOnlyItself) {
  auto gateway = Gateway("gw-refused", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"},
                                        {"IOT_DEVICE_GATEWAY_SHARDS", "1"}});
  // Batches merge while rule-forwarding is slow: the refused device's records share calls with
  // the others'.
  owners_.rules.delay_ms = 30;
  std::vector<std::pair<std::string, std::unique_ptr<common::MqttClient>>> devices;
  for (int d = 0; d < 4; ++d) {
    auto [id, secret] = AddDevice();
    devices.emplace_back(id, Device(id, secret));
  }
  owners_.rules.refused_device = devices[0].first;
  constexpr int kReports = 50;
  for (int i = 0; i < kReports; ++i) {
    for (auto& [id, client] : devices) {
      ASSERT_TRUE(
          client->Publish("$oc/devices/" + id + "/sys/messages/up", std::to_string(i), 1).ok());
    }
  }
  std::map<std::string, std::vector<int>> taken;
  ASSERT_TRUE(WaitUntil(
      [&] {
        return owners_.received.Records("device.message").size() == 3 * kReports &&
               owners_.received.Records("device.event", "validation_failed").size() == kReports;
      },
      seconds(30)))
      << owners_.received.Records("device.message").size() << gateway->process().Log();
  for (const auto& r : owners_.received.Records("device.message")) {
    taken[r.device().device_id()].push_back(
        Json::parse(r.envelope_json())["notify_data"]["body"]["content"].get<int>());
  }
  std::vector<int> expected(kReports);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_TRUE(taken[devices[0].first].empty());
  for (size_t d = 1; d < devices.size(); ++d) {
    EXPECT_EQ(taken[devices[d].first], expected) << devices[d].first;
  }
  for (const auto& r : owners_.received.Records("device.event", "validation_failed")) {
    EXPECT_EQ(r.device().device_id(), devices[0].first);
    const auto body = Json::parse(r.envelope_json())["notify_data"]["body"];
    EXPECT_EQ(body["reason"], "invalid_record");
    EXPECT_EQ(body["refused_by"], "rule-forwarding");
    EXPECT_TRUE(r.message_id().ends_with("/rejected/rule-forwarding")) << r.message_id();
  }
  EXPECT_EQ(Metric(*gateway, "iot_gateway_uplink_rejected_total", {{"reason", "invalid_record"}}),
            kReports);
  EXPECT_GT(owners_.rules.calls.load(), 0);
  EXPECT_NE(gateway->process().Log().find(devices[0].first), std::string::npos);
  EXPECT_EQ(Metric(*gateway, "iot_gateway_dead_letters_total"), 0);
}

TEST_F(GatewayTest, APoisonBatchGoesToTheDeadLettersAndTheShardMovesOn) {
  auto gateway = Gateway("gw-poison", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"},
                                       {"IOT_DEVICE_GATEWAY_SHARDS", "1"},
                                       {"IOT_DEVICE_GATEWAY_MAX_ATTEMPTS", "2"}});
  owners_.rules.delay_ms = 20;
  std::vector<std::pair<std::string, std::unique_ptr<common::MqttClient>>> devices;
  for (int d = 0; d < 3; ++d) {
    auto [id, secret] = AddDevice();
    devices.emplace_back(id, Device(id, secret));
  }
  const std::string poison = devices[1].first;
  owners_.rules.poison_device = poison;
  constexpr int kReports = 20;
  for (int i = 0; i < kReports; ++i) {
    for (auto& [id, client] : devices) {
      ASSERT_TRUE(
          client->Publish("$oc/devices/" + id + "/sys/messages/up", std::to_string(i), 1).ok());
    }
  }
  // The others' records all arrive, in order, although they shared requests with the poison.
  ASSERT_TRUE(
      WaitUntil([&] { return owners_.received.Records("device.message").size() == 2 * kReports; },
                seconds(60)))
      << owners_.received.Records("device.message").size() << gateway->process().Log();
  std::map<std::string, std::vector<int>> taken;
  for (const auto& r : owners_.received.Records("device.message")) {
    taken[r.device().device_id()].push_back(
        Json::parse(r.envelope_json())["notify_data"]["body"]["content"].get<int>());
  }
  std::vector<int> expected(kReports);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(taken[devices[0].first], expected);
  EXPECT_EQ(taken[devices[2].first], expected);
  // The poison device's records are dead letters, one row each, in PostgreSQL.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Metric(*gateway, "iot_gateway_dead_letters_total",
                      {{"target", "rule_forwarding.Ingest"}}) == kReports;
      },
      seconds(30)))
      << gateway->process().Log();
  pqxx::connection pg(thing_model_->pg_url());
  pqxx::work tx(pg);
  const auto rows = tx.exec_params(
      "SELECT code, attempts, request->'records'->0->'device'->>'deviceId', message_id "
      "FROM device_gateway.dead_letters WHERE device_id = $1 ORDER BY id",
      poison);
  ASSERT_EQ(rows.size(), static_cast<size_t>(kReports));
  for (const auto& row : rows) {
    EXPECT_EQ(row[0].as<std::string>(), "INVALID_ARGUMENT");
    EXPECT_EQ(row[1].as<int>(), 2);
    EXPECT_EQ(row[2].as<std::string>(), poison);
  }
  EXPECT_NE(gateway->process().Log().find("device_gateway.dead_letters"), std::string::npos);
  // The shard moves on: a later message of the poison device's neighbour arrives.
  Publish(*devices[0].second, "$oc/devices/" + devices[0].first + "/sys/messages/up", "99");
  EXPECT_TRUE(WaitUntil(
      [&] { return owners_.received.Records("device.message").size() == 2 * kReports + 1; },
      seconds(30)));
}

TEST_F(GatewayTest, BrokerQueueLimitReachedIsVisibleAsMetricAndLog) {
  // A broker with a tiny queue, and a gateway that stops reading (SIGSTOP) while a device
  // reports: the broker drops what exceeds its limit, and the gateway must say so.
  iot::testing::TestMosquitto small(
      iot::testing::AuthPluginConfig(
          redis_->Url(), kSecretKey,
          iot::testing::ServiceAccountEntry("gateway", "salt", kGatewayPassword)) +
      "\nmax_queued_messages 5\nsys_interval 1\n");
  auto gateway = Gateway("gw-limit", {{"IOT_MQTT_URL", fmt::format("mqtt://gateway:{}@127.0.0.1:{}",
                                                                   kGatewayPassword, small.port())},
                                      {"IOT_DEVICE_GATEWAY_RECEIVE_MAXIMUM", "100"}});
  EXPECT_EQ(Metric(*gateway, "iot_gateway_broker_dropped_messages"), 0);
  auto [id, secret] = AddDevice();
  auto device = Device(id, secret, nullptr, nullptr, small.Url());
  gateway->process().Signal(SIGSTOP);
  // More than the gateway's Receive Maximum (100 in flight to it) + 5 queued.
  for (int i = 0; i < 300; ++i) {
    Publish(*device, "$oc/devices/" + id + "/sys/messages/up", fmt::format("{}", i));
  }
  gateway->process().Signal(SIGCONT);
  EXPECT_TRUE(WaitUntil([&] { return Metric(*gateway, "iot_gateway_broker_dropped_messages") > 0; },
                        seconds(10)))
      << gateway->process().Log();
  EXPECT_NE(gateway->process().Log().find("the broker dropped messages at its queue limits"),
            std::string::npos);
}

TEST_F(GatewayTest, ModelChangeReachesTheGatewayThroughTheChangeFeed) {
  // A product of its own: its voltage max goes from 480 to 200.
  std::string model = iot::testing::ReadTextFile(IOT_TESTDATA_DIR "/smart_meter_product.json");
  model.replace(model.find("smartmeter01"), 12, "changemeter1");
  auto products = tm::Products::NewStub(
      grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials()));
  {
    tm::CreateProductRequest create;
    create.set_product_json(model);
    tm::Product created;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, kAdminKey);
    auto status = products->CreateProduct(&ctx, create, &created);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  auto gateway = Gateway("gw-model");
  auto [id, secret] = AddDevice("changemeter1");
  auto device = Device(id, secret);
  const std::string topic = "$oc/devices/" + id + "/sys/properties/report";
  Publish(*device, topic, Report(230));
  ASSERT_TRUE(WaitUntil([&] { return owners_.received.Count(owners_.received.reports) == 1; },
                        seconds(10)));

  const std::string old_max = R"("max": "480")";
  ASSERT_NE(model.find(old_max), std::string::npos);
  model.replace(model.find(old_max), old_max.size(), R"("max": "200")");
  tm::UpdateProductRequest update;
  update.set_product_id("changemeter1");
  update.set_product_json(model);
  tm::Product updated;
  grpc::ClientContext ctx;
  common::SetBearer(ctx, kAdminKey);
  auto status = products->UpdateProduct(&ctx, update, &updated);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // The cached model is dropped on `tm:changes`: the same report is now out of range.
  ASSERT_TRUE(WaitUntil(
      [&] {
        Publish(*device, topic, Report(230));
        return WaitUntil(
            [&] {
              return Metric(*gateway, "iot_gateway_uplink_rejected_total",
                            {{"reason", "invalid_property"}}) > 0;
            },
            milliseconds(300));
      },
      seconds(10)));
}

TEST_F(GatewayTest, DownlinkReachesADeviceThatNeverSubscribedAndTellsOffline) {
  auto gateway = Gateway("gw-down");
  auto [id, secret] = AddDevice();
  std::vector<common::MqttMessage> inbox;
  std::mutex inbox_mu;
  auto device = Device(id, secret, &inbox, &inbox_mu);
  auto stub = dg::InternalDownlink::NewStub(
      grpc::CreateChannel(gateway->address(), grpc::InsecureChannelCredentials()));
  auto publish = [&](const dg::PublishRequest& request, dg::PublishResponse* response,
                     const std::string& key = kServiceKey) {
    grpc::ClientContext ctx;
    common::SetBearer(ctx, key);
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    return stub->Publish(&ctx, request, response);
  };
  dg::PublishRequest request;
  request.set_device_id(id);
  request.set_kind(dg::DOWNLINK_KIND_COMMAND);
  request.set_request_id("cmd-1");
  request.set_payload(R"({"service_id":"meter","command_name":"reboot","paras":{"delay":1}})");
  request.set_qos(1);
  dg::PublishResponse response;
  auto status = publish(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.online());
  EXPECT_EQ(response.topic(), "$oc/devices/" + id + "/sys/commands/request_id=cmd-1");
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(inbox_mu);
        return !inbox.empty();
      },
      seconds(10)));
  {
    std::lock_guard lock(inbox_mu);
    EXPECT_EQ(inbox[0].topic, response.topic());
    EXPECT_EQ(inbox[0].payload, request.payload());
  }
  // The device answers; command-dispatch gets it, and rule-forwarding as device.command.
  Publish(*device, "$oc/devices/" + id + "/sys/commands/response/request_id=cmd-1",
          R"({"result_code":0,"response_name":"reboot_response","paras":{"result":"ok"}})");
  ASSERT_TRUE(WaitUntil([&] { return owners_.received.Count(owners_.received.responses) == 1; },
                        seconds(10)));
  {
    std::lock_guard lock(owners_.received.mu);
    EXPECT_EQ(owners_.received.responses[0].request_id(), "cmd-1");
    EXPECT_EQ(owners_.received.responses[0].kind(), command_dispatch::v1::RESPONSE_KIND_COMMAND);
  }
  EXPECT_TRUE(
      WaitUntil([&] { return owners_.received.Records("device.command", "response").size() == 1; },
                seconds(10)));

  device->Stop();
  auto [offline_id, offline_secret] = AddDevice();
  request.set_device_id(offline_id);
  status = publish(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.online());

  request.set_request_id("");
  status = publish(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("request_id"), std::string::npos) << status.error_message();
  request.set_request_id("x");
  request.set_kind(dg::DOWNLINK_KIND_UNSPECIFIED);
  EXPECT_EQ(publish(request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(publish(request, &response, "not-a-key").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(GatewayTest, ShadowGetIsAnsweredAndPresenceReachesEveryOwner) {
  auto gateway = Gateway("gw-shadow");
  // Named, not bound: clang 14 (clang-tidy) cannot capture a structured binding in a lambda.
  const auto [device_id, device_secret] = AddDevice();
  const std::string id = device_id;
  const std::string secret = device_secret;
  std::vector<common::MqttMessage> inbox;
  std::mutex inbox_mu;
  auto device = Device(id, secret, &inbox, &inbox_mu);
  Publish(*device, "$oc/devices/" + id + "/sys/shadow/get/request_id=sg-1",
          R"({"object_device_id":")" + id + R"(","service_id":"meter"})");
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(inbox_mu);
        return !inbox.empty();
      },
      seconds(10)))
      << gateway->process().Log();
  {
    std::lock_guard lock(inbox_mu);
    EXPECT_EQ(inbox[0].topic, "$oc/devices/" + id + "/sys/shadow/get/response/request_id=sg-1");
    EXPECT_EQ(Json::parse(inbox[0].payload)["shadow"][0]["version"], 7);
  }
  // A "shadow-" property-set response goes to shadow, not command-dispatch.
  Publish(*device, "$oc/devices/" + id + "/sys/properties/set/response/request_id=shadow-9",
          R"({"result_code":0,"result_desc":"success"})");
  ASSERT_TRUE(WaitUntil([&] { return owners_.received.Count(owners_.received.set_results) == 1; },
                        seconds(10)));
  device->Stop();
  auto has_presence = [&](const std::vector<dg::PresenceEvent>& events, bool online) {
    std::lock_guard lock(owners_.received.mu);
    for (const auto& e : events) {
      if (e.device().device_id() == id && e.online() == online) {
        return true;
      }
    }
    return false;
  };
  EXPECT_TRUE(WaitUntil(
      [&] {
        return has_presence(owners_.received.shadow_presence, true) &&
               has_presence(owners_.received.shadow_presence, false) &&
               has_presence(owners_.received.command_presence, true) &&
               has_presence(owners_.received.command_presence, false);
      },
      seconds(10)));
  std::vector<std::string> statuses;
  for (const auto& r : owners_.received.Records("device.status", "update")) {
    if (r.device().device_id() == id) {
      statuses.push_back(Json::parse(r.envelope_json())["notify_data"]["body"]["status"]);
    }
  }
  EXPECT_EQ(statuses, (std::vector<std::string>{"ONLINE", "OFFLINE"}));
  EXPECT_EQ(owners_.received.Count(owners_.received.responses), 0U);
}

// ---- Alink devices (services/device_gateway/README.md, Alink uplink) ----

/// A small TSL: the default function block and a custom one (`lamp`).
constexpr std::string_view kAlinkTsl = R"({
  "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
  "profile": {"version": "1.0", "productKey": "PRODUCT_KEY"},
  "properties": [
    {"identifier": "temperature", "name": "T", "accessMode": "r", "required": false,
     "dataType": {"type": "float", "specs": {"min": "-40", "max": "120", "step": "0.1"}}},
    {"identifier": "switch", "name": "S", "accessMode": "rw", "required": false,
     "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
    {"identifier": "lamp:brightness", "name": "B", "accessMode": "rw", "required": false,
     "dataType": {"type": "int", "specs": {"min": "0", "max": "100", "step": "1"}}}
  ],
  "events": [
    {"identifier": "post", "name": "post", "type": "info", "outputData": [],
     "method": "thing.event.property.post"},
    {"identifier": "alarm", "name": "Alarm", "type": "alert", "method": "thing.event.alarm.post",
     "outputData": [{"identifier": "level", "name": "L",
                     "dataType": {"type": "int", "specs": {"min": "0", "max": "5"}}}]}
  ],
  "services": []
})";

class GatewayAlinkTest : public GatewayTest {
 protected:
  /// A product of the alink dialect made from kAlinkTsl (its id is the productKey) and a device
  /// named `dn` in it; the device's secret.
  std::string AddAlinkDevice(const std::string& dn) {
    auto channel = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
    std::string tsl(kAlinkTsl);
    tsl.replace(tsl.find("PRODUCT_KEY"), std::string_view("PRODUCT_KEY").size(), pk_);
    tm::CreateProductRequest product;
    product.set_tsl_json(tsl);
    tm::Product created;
    grpc::ClientContext product_ctx;
    common::SetBearer(product_ctx, kAdminKey);
    const auto made =
        tm::Products::NewStub(channel)->CreateProduct(&product_ctx, product, &created);
    EXPECT_TRUE(made.ok() || made.error_code() == grpc::StatusCode::ALREADY_EXISTS)
        << made.error_message();
    tm::AddDeviceRequest add;
    add.set_product_id(pk_);
    add.set_node_id(dn);
    tm::AddDeviceResponse added;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, kAdminKey);
    const auto status = tm::Devices::NewStub(channel)->AddDevice(&ctx, add, &added);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(added.device().device_id(), pk_ + "_" + dn);
    return added.secret();
  }

  /// Connected as Alibaba's C LinkSDK 4.x connects: fixed timestamp, HMAC-SHA256 in upper case,
  /// and it never subscribes (the platform delivers its replies unasked).
  std::unique_ptr<common::MqttClient> AlinkDevice(const std::string& dn,
                                                  const std::string& secret) {
    const std::string cid = pk_ + "." + dn;
    const std::string timestamp = "2524608000000";
    std::string password =
        common::HmacSha256Hex(secret, "clientId" + cid + "deviceName" + dn + "productKey" + pk_ +
                                          "timestamp" + timestamp);
    std::transform(password.begin(), password.end(), password.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    auto client = common::MqttClient::Create(
        {.url = broker_->Url(),
         .client_id = cid + "|timestamp=" + timestamp +
                      ",_ss=1,_v=sdk-c-4.1.0,securemode=3,signmethod=hmacsha256,ext=3|",
         .username = dn + "&" + pk_,
         .password = password});
    EXPECT_TRUE(client.ok()) << client.status();
    (*client)->SetMessageHandler([this](const common::MqttMessage& m) {
      std::lock_guard lock(inbox_mu_);
      inbox_.push_back(m);
    });
    EXPECT_TRUE((*client)->Start().ok());
    EXPECT_TRUE((*client)->WaitConnected(seconds(10)));
    return *std::move(client);
  }

  /// The payloads the device received on `topic`.
  std::vector<std::string> Received(const std::string& topic) {
    std::lock_guard lock(inbox_mu_);
    std::vector<std::string> out;
    for (const auto& m : inbox_) {
      if (m.topic == topic) {
        out.push_back(m.payload);
      }
    }
    return out;
  }
  /// The `n`-th (0-based) payload on `topic`, waited for; null when none came.
  Json Await(const std::string& topic, size_t n = 0) {
    if (!WaitUntil([&] { return Received(topic).size() > n; }, seconds(10))) {
      ADD_FAILURE() << "nothing on " << topic;
      return {};
    }
    return Json::parse(Received(topic)[n]);
  }

  const std::string pk_ = fmt::format("a1Gw{}x{}", ::getpid() % 100000, std::rand() % 100000);
  std::mutex inbox_mu_;
  std::vector<common::MqttMessage> inbox_;
};

TEST_F(GatewayAlinkTest, PropertyPostIsStoredWithDialectAndTopicThenAnsweredWithTheIdAsSent) {
  auto gateway = Gateway("gw-alink-post");
  const std::string dn = "dev01";
  const std::string device_id = pk_ + "_" + dn;
  auto device = AlinkDevice(dn, AddAlinkDevice(dn));
  const std::string topic = "/sys/" + pk_ + "/" + dn + "/thing/event/property/post";
  // The Node SDK's id form (the reply topic inside); LinkSDK 4.x sends no method.
  const std::string id = "1|exp-topic|" + topic + "_reply";
  owners_.rules.outage.Start(grpc::StatusCode::UNAVAILABLE);
  Publish(
      *device, topic,
      R"({"id":")" + id +
          R"(","version":"1.0","params":{"temperature":{"value":21.5,"time":1700000000123},"switch":1,"lamp:brightness":40}})");
  // Shadow has it, rule-forwarding (history, rules, subscriptions) not yet: no reply.
  ASSERT_TRUE(
      WaitUntil([&] { return owners_.received.Count(owners_.received.reports) == 1; }, seconds(10)))
      << gateway->process().Log();
  EXPECT_FALSE(WaitUntil([&] { return !Received(topic + "_reply").empty(); }, seconds(1)));
  owners_.rules.outage.Stop();
  const Json reply = Await(topic + "_reply");
  EXPECT_EQ(
      Received(topic + "_reply")[0],
      R"({"id":")" + id +
          R"(","code":200,"data":{},"message":"success","method":"thing.event.property.post","version":"1.0"})");
  EXPECT_EQ(reply["id"], id);
  ASSERT_EQ(owners_.received.Records("device.property", "report").size(), 1U);
  const auto record = owners_.received.Records("device.property", "report")[0];
  EXPECT_EQ(record.topic(), topic);
  EXPECT_EQ(record.device().dialect(), "alink");
  EXPECT_EQ(record.device().device_id(), device_id);
  const Json envelope = Json::parse(record.envelope_json());
  EXPECT_EQ(envelope["notify_data"]["header"]["dialect"], "alink");
  std::lock_guard lock(owners_.received.mu);
  const auto& report = owners_.received.reports[0];
  EXPECT_EQ(report.device().dialect(), "alink");
  const Json services = Json::parse(report.services_json());
  ASSERT_EQ(services.size(), 3U) << services;
  // Per function block and time: lamp, default (plain values), default at the value's time.
  EXPECT_EQ(services[0]["service_id"], "lamp");
  EXPECT_EQ(services[1]["properties"], Json::parse(R"({"switch":true})"));
  EXPECT_EQ(services[2]["properties"], Json::parse(R"({"temperature":21.5})"));
  EXPECT_EQ(services[2]["event_time"], "2023-11-14T22:13:20.123Z");
}

TEST_F(GatewayAlinkTest, BadInputIsAnsweredWithItsCodeAndCountedNtpAndShadowAreAnswered) {
  auto gateway = Gateway("gw-alink-bad");
  const std::string dn = "dev02";
  auto device = AlinkDevice(dn, AddAlinkDevice(dn));
  const std::string sys = "/sys/" + pk_ + "/" + dn;
  const std::string post = sys + "/thing/event/property/post";
  // Invalid params: 460 naming the property; the valid one passes on.
  Publish(*device, post, R"({"id":"101","params":{"temperature":500,"switch":0}})");
  Json reply = Await(post + "_reply");
  EXPECT_EQ(reply["id"], "101");
  EXPECT_EQ(reply["code"], 460);
  EXPECT_NE(reply["message"].get<std::string>().find("temperature"), std::string::npos) << reply;
  // Malformed JSON with a recoverable id: 400.
  Publish(*device, post, R"({"id":"102","params":{"temperature":)");
  reply = Await(post + "_reply", 1);
  EXPECT_EQ(reply["id"], "102");
  EXPECT_EQ(reply["code"], 400);
  // An unknown event: 460.
  const std::string event = sys + "/thing/event/explosion/post";
  Publish(*device, event, R"({"id":"103","params":{"value":{}}})");
  reply = Await(event + "_reply");
  EXPECT_EQ(reply["code"], 460);
  EXPECT_EQ(reply["method"], "thing.event.explosion.post");
  // sys.ack 0: no reply, but still stored.
  Publish(*device, post, R"({"id":"104","sys":{"ack":0},"params":{"temperature":20}})");
  // NTP.
  const std::string ntp = "/ext/ntp/" + pk_ + "/" + dn;
  Publish(*device, ntp + "/request", R"({"deviceSendTime":"1799999999000"})");
  const Json time = Await(ntp + "/response");
  EXPECT_EQ(time["deviceSendTime"], "1799999999000");
  EXPECT_TRUE(time["serverRecvTime"].is_string());
  EXPECT_TRUE(time["serverSendTime"].is_string());
  // Shadow get: the shadow's answer in Alibaba's form.
  const std::string shadow_get = "/shadow/get/" + pk_ + "/" + dn;
  Publish(*device, "/shadow/update/" + pk_ + "/" + dn, R"({"method":"get"})");
  const Json shadow = Await(shadow_get);
  EXPECT_EQ(shadow["method"], "reply");
  EXPECT_EQ(shadow["payload"]["status"], "success");
  EXPECT_EQ(shadow["version"], 7);

  ASSERT_TRUE(WaitUntil([&] { return owners_.received.Count(owners_.received.reports) == 2; },
                        seconds(10)));
  EXPECT_EQ(Received(post + "_reply").size(), 2U);  // none for the ack 0 post
  for (const auto& [reason, count] : std::map<std::string, double>{
           {"invalid_property", 1}, {"malformed", 1}, {"invalid_event", 1}}) {
    EXPECT_EQ(Metric(*gateway, "iot_gateway_uplink_rejected_total", {{"reason", reason}}), count)
        << reason;
  }
  const auto failed = owners_.received.Records("device.event", "validation_failed");
  ASSERT_EQ(failed.size(), 3U);
  for (const auto& r : failed) {
    EXPECT_EQ(r.device().dialect(), "alink");
    EXPECT_TRUE(r.topic() == post || r.topic() == event) << r.topic();
  }
  EXPECT_NE(gateway->process().Log().find(pk_ + "_" + dn), std::string::npos);
}

TEST_F(GatewayTest, LargeMessagesQueuedTogetherDoNotStallTheirShard) {
  // A device may send messages up to the payload limit at its rate. Queued behind a slow call,
  // they are handed on together; one call over the owner's gRPC receive limit (4 MiB by default)
  // would be refused and retried forever, and every device of the shard would wait behind it.
  owners_.rules.delay_ms = 300;
  auto gateway = Gateway("gw-large", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "1000"}});
  auto [id, secret] = AddDevice();
  auto device = Device(id, secret);
  const std::string topic = "$oc/devices/" + id + "/sys/messages/up";
  const std::string big = "\"" + std::string(900'000, 'x') + "\"";
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(device->Publish(topic, big, 1).ok());
  }
  Publish(*device, topic, R"({"after":"the large ones"})");
  EXPECT_TRUE(WaitUntil([&] { return owners_.received.Records("device.message").size() == 9; },
                        seconds(60)))
      << owners_.received.Records("device.message").size() << " of 9 handed on\n"
      << gateway->process().Log();
}

// ---- What one device message may carry (issue #15; docs/security.md) ----

/// Each limit through the real broker and a gateway with its default limits: a message at the
/// limit is handed on; the same message one step over it is rejected — counted under its reason,
/// logged with the device id, forwarded as validation_failed — and the gateway stays up.
class GatewayLimitsTest : public GatewayTest {
 protected:
  void SetUp() override {
    gateway_ = Gateway("gw-limits", {{"IOT_DEVICE_GATEWAY_RATE_LIMIT", "100000"}});
    std::tie(id_, secret_) = AddDevice();
    device_ = Device(id_, secret_);
  }

  /// What the owners got from the device other than rejections and presence.
  size_t HandedOn() {
    std::lock_guard lock(owners_.received.mu);
    size_t n = owners_.received.reports.size() + owners_.received.responses.size();
    for (const auto& r : owners_.received.records) {
      n += r.device().device_id() == id_ && r.event() != "validation_failed" &&
                   r.resource() != "device.status" && r.resource() != "device.command"
               ? 1U
               : 0U;
    }
    return n;
  }

  /// validation_failed records of the device with this reason.
  size_t Refusals(const std::string& reason) {
    size_t n = 0;
    for (const auto& r : owners_.received.Records("device.event", "validation_failed")) {
      n += Json::parse(r.envelope_json())["notify_data"]["body"]["reason"] == reason ? 1U : 0U;
    }
    return n;
  }

  /// Publishes `at` on `$oc/devices/{id}/{at_suffix}` and expects it handed on, then `over` on
  /// `over_suffix` and expects it rejected for `reason`, and the gateway still serving.
  void ExpectLimit(const std::string& reason, const std::string& at_suffix, const std::string& at,
                   const std::string& over_suffix, const std::string& over) {
    const std::string prefix = "$oc/devices/" + id_ + "/";
    const size_t handed = HandedOn();
    Publish(*device_, prefix + at_suffix, at);
    ASSERT_TRUE(WaitUntil([&] { return HandedOn() > handed; }, seconds(30)))
        << "the message at the limit was not handed on\n"
        << gateway_->process().Log();
    EXPECT_EQ(Refusals(reason), 0U) << "at the limit";
    Publish(*device_, prefix + over_suffix, over);
    ASSERT_TRUE(WaitUntil([&] { return Refusals(reason) == 1; }, seconds(30)))
        << gateway_->process().Log();
    EXPECT_EQ(Metric(*gateway_, "iot_gateway_uplink_rejected_total", {{"reason", reason}}), 1);
    const std::string log = gateway_->process().Log();
    EXPECT_NE(log.find(R"("msg":"device uplink rejected")"), std::string::npos);
    EXPECT_NE(log.find(R"("reason":")" + reason + "\""), std::string::npos) << log;
    EXPECT_NE(log.find(id_), std::string::npos);
    // Still up and serving: the next ordinary message is handed on.
    const size_t after = HandedOn();
    Publish(*device_, prefix + "sys/messages/up", R"({"still":"up"})");
    ASSERT_TRUE(WaitUntil([&] { return HandedOn() > after; }, seconds(30)))
        << gateway_->process().Log();
    EXPECT_TRUE(gateway_->process().running());
  }

  static std::string NestedArrays(size_t depth) {
    return std::string(depth, '[') + std::string(depth, ']');
  }
  static std::string NestedObjects(size_t depth) {
    std::string text = "1";
    for (size_t i = 0; i < depth; ++i) {
      text.insert(0, R"({"a":)").push_back('}');
    }
    return text;
  }
  /// `n` entries `{"service_id":...}` joined by commas.
  template <typename Entry>
  static std::string Join(size_t n, Entry entry) {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
      out += (i == 0 ? "" : ",");
      out += entry(i);
    }
    return out;
  }

  std::unique_ptr<iot::testing::ServiceProcess> gateway_;
  std::string id_;
  std::string secret_;
  std::unique_ptr<common::MqttClient> device_;
};

TEST_F(GatewayLimitsTest, TheReportedDeepMessageIsRejectedCountedAndTheGatewayStaysUp) {
  // Issue #15: one authenticated device published an 800 KB messages/up, a JSON array nested
  // 400,000 deep, and the gateway died of a stack overflow. 64 levels (the default) pass.
  const std::string deep = NestedArrays(400'000);
  ASSERT_EQ(deep.size(), 800'000U);
  ExpectLimit("too_deep", "sys/messages/up", NestedArrays(64), "sys/messages/up", deep);
  EXPECT_NE(gateway_->process().Log().find("JSON nested deeper than 64 levels"), std::string::npos);
}

TEST_F(GatewayLimitsTest, ReportNestedDeeperThanTheLimit) {
  // services array, entry, properties: the jsonObject value adds the rest of the 64 levels.
  const auto report = [](size_t depth) {
    return R"({"services":[{"service_id":"meter","properties":{"location":)" +
           NestedObjects(depth) + "}}]}";
  };
  ExpectLimit("too_deep", "sys/properties/report", report(60), "sys/properties/report", report(61));
}

TEST_F(GatewayLimitsTest, TopicLongerThanTheLimit) {
  const std::string prefix = "$oc/devices/" + id_ + "/user/";
  const std::string at = "user/" + std::string(512 - prefix.size(), 't');
  ExpectLimit("too_long", at, "at", at + "t", "over");
}

TEST_F(GatewayLimitsTest, TopicWithMoreLevelsThanTheLimit) {
  // `$oc/devices/{id}/user` is 4 levels: 12 more make the limit of 16.
  std::string at = "user";
  for (int i = 0; i < 12; ++i) {
    at += "/l" + std::to_string(i);
  }
  ExpectLimit("too_long", at, "at", at + "/l12", "over");
}

TEST_F(GatewayLimitsTest, RequestIdInTheTopicLongerThanTheLimit) {
  const std::string response = "sys/commands/response/request_id=";
  ExpectLimit("too_long", response + std::string(256, 'r'), R"({"result_code":0})",
              response + std::string(257, 'r'), R"({"result_code":0})");
}

TEST_F(GatewayLimitsTest, MoreServiceEntriesThanTheLimitInAReport) {
  const auto report = [](size_t n) {
    return R"({"services":[)" +
           Join(n,
                [](size_t i) {
                  return R"({"service_id":"meter","properties":{"voltage":)" +
                         std::to_string(i % 400) + "}}";
                }) +
           "]}";
  };
  ExpectLimit("too_many", "sys/properties/report", report(100), "sys/properties/report",
              report(101));
}

TEST_F(GatewayLimitsTest, MorePropertiesThanTheLimitInAServiceEntry) {
  // The valid voltage passes next to 499 properties the model does not know.
  const auto report = [](size_t n) {
    return R"({"services":[{"service_id":"meter","properties":{"voltage":230,)" +
           Join(n - 1, [](size_t i) { return "\"p" + std::to_string(i) + "\":1"; }) + "}}]}";
  };
  ExpectLimit("too_many", "sys/properties/report", report(500), "sys/properties/report",
              report(501));
}

TEST_F(GatewayLimitsTest, MoreEventsThanTheLimitInAMessage) {
  const auto events = [](size_t n) {
    return R"({"services":[)" +
           Join(n,
                [](size_t) {
                  return R"({"service_id":"meter","event_type":"overload","paras":{"current":12}})";
                }) +
           "]}";
  };
  ExpectLimit("too_many", "sys/events/up", events(100), "sys/events/up", events(101));
}

TEST_F(GatewayLimitsTest, PropertyNameLongerThanTheLimit) {
  const auto report = [](size_t name_bytes) {
    return R"({"services":[{"service_id":"meter","properties":{"voltage":230,")" +
           std::string(name_bytes, 'n') + R"(":1}}]})";
  };
  ExpectLimit("too_long", "sys/properties/report", report(256), "sys/properties/report",
              report(257));
}

TEST_F(GatewayLimitsTest, StringValueLongerThanTheLimit) {
  // A system service's event is forwarded as it is: only the limits apply to it.
  const auto event = [](size_t bytes) {
    return R"({"services":[{"service_id":"$sdk_info","event_type":"sdk_info_report","paras":{"version":")" +
           std::string(bytes, 'v') + R"("}}]})";
  };
  ExpectLimit("too_long", "sys/events/up", event(64 * 1024), "sys/events/up", event(64 * 1024 + 1));
}

}  // namespace
}  // namespace iot
