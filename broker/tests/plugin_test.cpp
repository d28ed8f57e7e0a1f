// The iot_auth plugin loaded into a real mosquitto, against a real Redis holding device records
// in the thing-model projection format (docs/redis-projection.md).

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "alink_client_id.h"
#include "iot/common/crypto.h"
#include "iot/common/redis.h"
#include "iot/testing/pki.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "test_client.h"
#include "topic_rules.h"

namespace iot::broker_test {
namespace {

using ::iot::testing::WaitUntil;
using ::testing::HasSubstr;
using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr char kSecretKey[] = "5f1c0a3b2e4d6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
constexpr char kGatewayUser[] = "gateway";
constexpr char kGatewayPassword[] = "gateway-pass";
constexpr char kGatewaySalt[] = "c2FsdA";

constexpr int kV311NotAuthorized = 5;           // CONNACK return code
constexpr int kV5NotAuthorized = 0x87;          // CONNACK / PUBACK / SUBACK reason code
constexpr int kV5NoMatchingSubscribers = 0x10;  // PUBACK: success, nobody subscribed
constexpr auto kWait = 10s;
constexpr auto kKickDeadline = 5s;    // the issue's bound for a frozen device to be disconnected
constexpr uint32_t kPartitions = 16;  // the plugin's default uplink_partitions

/// Where the plugin delivers `$oc/devices/{device_id}/{rest}` (broker/README.md, Uplink).
std::string Up(const std::string& device_id, const std::string& rest) {
  return *broker::UplinkRelayTopic(device_id, "$oc/devices/" + device_id + "/" + rest, kPartitions);
}

std::string Timestamp(std::chrono::system_clock::time_point time) {
  const auto hours = std::chrono::floor<std::chrono::hours>(time);
  const std::chrono::year_month_day date{std::chrono::floor<std::chrono::days>(hours)};
  return fmt::format("{:04}{:02}{:02}{:02}", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                     (hours - std::chrono::floor<std::chrono::days>(hours)).count());
}

std::string Now() { return Timestamp(std::chrono::system_clock::now()); }

/// The payloads `client` received, in order.
std::vector<std::string> Payloads(const TestClient& client) {
  std::vector<std::string> payloads;
  for (const auto& m : client.messages()) {
    payloads.push_back(m.payload);
  }
  return payloads;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

/// Topics device p1_a may not publish on: the internal topics (uplink partitions, its own and
/// p1_b's, presence, downlink, results, the partition count) and its own down-topics (a device
/// cannot command itself).
std::vector<std::string> InternalTopicsOfA() {
  return {std::string("$iot/down/p1_b/sys/commands/request_id=1"),
          std::string("$iot/presence/p1_b"),
          std::string("$iot/presence/p1_a"),
          std::string("$iot/down-result/p1_b"),
          std::string("$iot/config/uplink_partitions"),
          Up("p1_a", "sys/properties/report"),
          Up("p1_b", "sys/properties/report"),
          Up("p1_a", "user/custom"),
          "iot/presence/" + std::to_string(broker::UplinkPartition("p1_b", kPartitions)) + "/p1_b",
          std::string("iot/up/0/p1_a/sys/messages/up"),
          std::string("$oc/devices/p1_a"),
          std::string("$oc/devices/p1_a/sys/messages/down"),
          std::string("$oc/devices/p1_a/sys/properties/set/request_id=1")};
}

/// Subscriptions device p1_a is refused: p1_b's topics, wildcards over devices, internal topics.
std::vector<const char*> FiltersRefusedToA() {
  return {"$oc/devices/p1_b/sys/#",
          "$oc/devices/+/sys/#",
          "#",
          "$oc/devices/#",
          "$iot/#",
          "$iot/presence/+",
          "$share/g/$oc/devices/p1_b/sys/#",
          "iot/up/#",
          "iot/up/+/p1_b/sys/#",
          "iot/up/+/p1_a/#",
          "iot/presence/+/+",
          "$share/g/iot/up/+/+/sys/#",
          "iot/#",
          "$iot/config/uplink_partitions",
          "+/#",
          "+/up/#",
          "+/+/+/+/sys/#",
          "iot/+/+/p1_a/#",
          "$iot/down/p1_a/#",
          "$iot/down-result/+",
          "$share/g/#",
          "$share/g/$iot/#",
          "$share/g/iot/presence/+/+",
          "$share/g/iot/#",
          "$share/g/$oc/devices/p1_a/#",
          "$oc/+/p1_b/#",
          "$oc/devices/+/user/#",
          "$oc/devices/p1_a/../p1_b/#"};
}

class PluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = std::make_unique<iot::testing::TestRedis>();
    auto client = common::RedisClient::Create(common::RedisOptions{.url = redis_->Url()});
    ASSERT_TRUE(client.ok()) << client.status();
    redis_client_ = *std::move(client);
    Redis({"SET", "tm:projection:ready", "1"});
    StartBroker();
  }

  /// (Re)starts the broker with the plugin and `extra_options` (plugin_opt_* lines).
  void StartBroker(const std::string& extra_options = "") {
    broker_.reset();
    broker_ = std::make_unique<iot::testing::TestMosquitto>(PluginConfig(extra_options));
  }

  std::string PluginConfig(const std::string& extra_options) const {
    // log_dest stderr: unbuffered, so the test can read it while the broker runs.
    return "log_dest stderr\n" +
           iot::testing::AuthPluginConfig(
               redis_->Url(), kSecretKey,
               iot::testing::ServiceAccountEntry(kGatewayUser, kGatewaySalt, kGatewayPassword)) +
           extra_options + "\n";
  }

  void Redis(const std::vector<std::string>& args) {
    auto reply = redis_client_->Command(args);
    ASSERT_TRUE(reply.ok()) << reply.status();
    ASSERT_FALSE(reply->is_error()) << reply->DebugString();
  }

  /// Writes `tm:dev:{id}` as thing-model does, the secret sealed with the platform key; product
  /// and node id are the parts of `id` before and after its first '_'. `dialect`: the field of
  /// devices of Alink products (`alink`), none when empty.
  void AddDevice(const std::string& id, const std::string& secret, bool frozen = false,
                 const std::string& dialect = "") {
    auto box = common::SecretBox::FromKeyText(kSecretKey);
    ASSERT_TRUE(box.ok()) << box.status();
    const size_t split = id.find('_');
    std::vector<std::string> command = {"HSET",       "tm:dev:" + id,
                                        "tenant_id",  "t1",
                                        "product_id", id.substr(0, split),
                                        "node_id",    id.substr(split + 1),
                                        "frozen",     frozen ? "1" : "0",
                                        "secret",     box->Seal(secret, id),
                                        "version",    "1"};
    if (!dialect.empty()) {
      command.insert(command.end(), {"dialect", dialect});
    }
    Redis(command);
  }

  /// Writes a certificate-only device as thing-model does (RedisProjection::PutDevice: the whole
  /// hash replaced in one MULTI, then the change on tm:changes), so that the plugin never holds a
  /// half-written record, and whatever it read before is re-read.
  void AddCertificateDevice(const std::string& id, const std::string& fingerprint) {
    const size_t split = id.find('_');
    const std::string key = "tm:dev:" + id;
    auto replies = redis_client_->Pipeline(
        {{"MULTI"},
         {"DEL", key},
         {"HSET", key, "tenant_id", "t1", "product_id", id.substr(0, split), "node_id",
          id.substr(split + 1), "frozen", "0", "fingerprint", fingerprint, "version", "1"},
         {"EXEC"}});
    ASSERT_TRUE(replies.ok()) << replies.status();
    for (const auto& reply : *replies) {
      ASSERT_FALSE(reply.is_error()) << reply.DebugString();
    }
    NotifyChange(id, "create", false);
  }

  void NotifyChange(const std::string& id, const std::string& op, bool frozen) {
    Redis({"PUBLISH", "tm:changes",
           Json{{"kind", "device"},
                {"op", op},
                {"device_id", id},
                {"tenant_id", "t1"},
                {"frozen", frozen},
                {"version", 2}}
               .dump()});
  }

  TestClient::Options Device(const std::string& id, const std::string& secret, int sign_type = 0,
                             const std::string& timestamp = Now(), int protocol = 4) const {
    return TestClient::Options{.port = broker_->port(),
                               .client_id = fmt::format("{}_0_{}_{}", id, sign_type, timestamp),
                               .username = id,
                               .password = common::HmacSha256Hex(timestamp, secret),
                               .protocol = protocol};
  }

  std::unique_ptr<TestClient> Connect(const TestClient::Options& options) {
    auto client = std::make_unique<TestClient>(options);
    const int rc = client->Connect();
    EXPECT_EQ(rc, 0) << "client " << options.client_id << "; broker log:\n" << BrokerLog();
    return client;
  }

  /// The device-gateway's service account, MQTT v5.
  std::unique_ptr<TestClient> Gateway(const std::string& client_id = "gateway-test") {
    return Connect(TestClient::Options{.port = broker_->port(),
                                       .client_id = client_id,
                                       .username = kGatewayUser,
                                       .password = kGatewayPassword,
                                       .protocol = 5});
  }

  /// Connects with `options` and returns the CONNACK code.
  int TryConnect(const TestClient::Options& options) {
    TestClient client(options);
    return client.Connect();
  }

  std::string BrokerLog() const { return ReadFile(broker_->dir() / "mosquitto.log"); }

  std::vector<Json> Presence(const TestClient& gateway, const std::string& device_id) const {
    std::vector<Json> out;
    for (const auto& message : gateway.messages_on("$iot/presence/" + device_id)) {
      out.push_back(Json::parse(message.payload));
    }
    return out;
  }

  /// Runs a mosquitto command-line client to completion; returns its exit code and output.
  std::pair<int, std::string> RunCli(const std::vector<std::string>& argv) {
    iot::testing::TempDir dir("iot-cli");
    const auto log = dir.path() / "out.log";
    const int rc = iot::testing::RunCommand(argv, log);
    return {rc, ReadFile(log)};
  }

  std::vector<std::string> CliArgs(const std::string& tool, const TestClient::Options& options) {
    return {tool,
            "-h",
            "127.0.0.1",
            "-p",
            std::to_string(broker_->port()),
            "-i",
            options.client_id,
            "-u",
            options.username.value_or(""),
            "-P",
            options.password.value_or("")};
  }

  std::unique_ptr<iot::testing::TestRedis> redis_;
  std::unique_ptr<common::RedisClient> redis_client_;
  std::unique_ptr<iot::testing::TestMosquitto> broker_;
};

// ---- Authentication ----

TEST_F(PluginTest, ValidDeviceConnectsAndReportsProperties) {
  AddDevice("p1_n1", "secret-1");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);

  // Sign type 1 with the current hour, MQTT 3.1.1 as Huawei's SDKs speak it.
  auto device = Connect(Device("p1_n1", "secret-1", /*sign_type=*/1));
  const std::string report =
      R"({"services":[{"service_id":"s","properties":{"t":21.5},"event_time":"20261126T174248Z"}]})";
  EXPECT_EQ(device->Publish("$oc/devices/p1_n1/sys/properties/report", report, 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [&](const ReceivedMessage& m) {
        return m.topic == Up("p1_n1", "sys/properties/report") && m.payload == report;
      },
      kWait));

  // Uppercase hex and MQTT v5 work too.
  auto options = Device("p1_n1", "secret-1", 0, Now(), 5);
  for (auto& c : *options.password) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  options.client_id = "p1_n1_0_0_" + Now();
  auto v5 = Connect(options);
  EXPECT_EQ(v5->Publish("$oc/devices/p1_n1/sys/messages/up", "hello", 1), 0);
  EXPECT_TRUE(gateway->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "hello"; },
                                      kWait));
}

TEST_F(PluginTest, CommandLineClientsConnectAsDevices) {
  AddDevice("p1_cli", "cli-secret");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);

  // mosquitto_pub as the device.
  auto args = CliArgs("mosquitto_pub", Device("p1_cli", "cli-secret", 1));
  args.insert(args.end(),
              {"-q", "1", "-t", "$oc/devices/p1_cli/sys/events/up", "-m", R"({"services":[]})"});
  const auto [pub_rc, pub_out] = RunCli(args);
  EXPECT_EQ(pub_rc, 0) << pub_out;
  EXPECT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.topic == Up("p1_cli", "sys/events/up"); }, kWait));

  // mosquitto_sub as the device, subscribed to its own down-topics, receives a command.
  iot::testing::TempDir dir("iot-cli");
  auto sub_args = CliArgs("mosquitto_sub", Device("p1_cli", "cli-secret"));
  sub_args.insert(sub_args.end(),
                  {"-q", "1", "-t", "$oc/devices/p1_cli/sys/#", "-C", "1", "-W", "20", "-v"});
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);
  iot::testing::Process sub(iot::testing::Process::Options{
      .argv = sub_args, .env = {}, .log_file = dir.path() / "sub.log", .run_as_user = {}});
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) {
        return m.topic == "$iot/presence/p1_cli" &&
               Json::parse(m.payload).value("event", "") == "connected";
      },
      kWait));
  EXPECT_LT(gateway->Publish("$iot/down/p1_cli/sys/commands/request_id=7", R"({"paras":{}})", 1),
            0x80);
  const auto exit_code = sub.Wait(kWait);
  ASSERT_TRUE(exit_code.has_value());
  EXPECT_EQ(*exit_code, 0);
  EXPECT_THAT(sub.Log(), HasSubstr("$oc/devices/p1_cli/sys/commands/request_id=7 {\"paras\":{}}"));

  // A wrong password makes mosquitto_pub fail.
  auto bad = Device("p1_cli", "not-the-secret");
  auto bad_args = CliArgs("mosquitto_pub", bad);
  bad_args.insert(bad_args.end(), {"-t", "$oc/devices/p1_cli/sys/messages/up", "-m", "x"});
  const auto [bad_rc, bad_out] = RunCli(bad_args);
  EXPECT_NE(bad_rc, 0);
  EXPECT_THAT(bad_out, HasSubstr("not authorised"));
}

TEST_F(PluginTest, RefusesEveryBadIdentity) {
  AddDevice("p1_ok", "good");
  AddDevice("p1_frozen", "good", /*frozen=*/true);
  AddDevice("p1_deleted", "good");
  Redis({"DEL", "tm:dev:p1_deleted"});
  const std::string stale = Timestamp(std::chrono::system_clock::now() - 3h);

  struct Case {
    std::string name;
    TestClient::Options options;
  };
  auto mismatch = Device("p1_ok", "good");
  mismatch.username = "p1_frozen";
  auto malformed = Device("p1_ok", "good");
  malformed.client_id = "p1_ok_" + Now();
  auto bad_sign = Device("p1_ok", "good");
  bad_sign.client_id = "p1_ok_0_2_" + Now();
  auto anonymous = Device("p1_ok", "good");
  anonymous.username.reset();
  anonymous.password.reset();
  auto no_password = Device("p1_ok", "good");
  no_password.password.reset();
  auto gateway_bad = TestClient::Options{
      .port = broker_->port(), .client_id = "gw", .username = kGatewayUser, .password = "wrong"};
  const std::vector<Case> cases = {
      {"unknown device", Device("p1_unknown", "good")},
      {"frozen device", Device("p1_frozen", "good")},
      {"deleted device", Device("p1_deleted", "good")},
      {"bad password", Device("p1_ok", "bad")},
      {"malformed client id", malformed},
      {"sign type 2", bad_sign},
      {"username is not the client id's device", mismatch},
      {"sign type 1, timestamp 3 h old", Device("p1_ok", "good", 1, stale)},
      {"anonymous", anonymous},
      {"no password", no_password},
      {"service account, bad password", gateway_bad},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(TryConnect(c.options), kV311NotAuthorized) << c.name;
  }
  auto v5 = Device("p1_unknown", "good", 0, Now(), 5);
  EXPECT_EQ(TryConnect(v5), kV5NotAuthorized);

  // Sign type 0 does not check the time; the good identity still works.
  EXPECT_EQ(TryConnect(Device("p1_ok", "good", 0, stale)), 0);
  EXPECT_EQ(TryConnect(Device("p1_ok", "good", 1)), 0);
  EXPECT_THAT(BrokerLog(), HasSubstr("iot_auth: refused client"));
  EXPECT_THAT(BrokerLog(), ::testing::Not(HasSubstr("good")));  // no secret in the log
}

// ---- Authorisation ----

TEST_F(PluginTest, DeviceCannotUseAnotherDevicesTopicsOrInternalTopics) {
  AddDevice("p1_a", "secret-a");
  AddDevice("p1_b", "secret-b");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/user/#", 1), 1);
  auto a = Connect(Device("p1_a", "secret-a", 0, Now(), 5));
  auto b = Connect(Device("p1_b", "secret-b"));

  // Publishing on B's topics or on internal topics: refused (v5 PUBACK 0x87), never delivered.
  EXPECT_EQ(a->Publish("$oc/devices/p1_b/sys/properties/report", "forged", 1), kV5NotAuthorized);
  EXPECT_EQ(a->Publish("$oc/devices/p1_b/user/custom", "forged", 1), kV5NotAuthorized);
  EXPECT_EQ(a->Publish("$oc/devices/p1_a/sys/commands/request_id=1", "forged", 1),
            kV5NotAuthorized);
  for (const std::string& topic : InternalTopicsOfA()) {
    EXPECT_EQ(a->Publish(topic, "forged", 1), kV5NotAuthorized) << topic;
  }
  // Its own topics work; the marker arriving means the forged ones, sent before, were dropped.
  EXPECT_EQ(a->Publish("$oc/devices/p1_a/user/custom", "marker", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "marker"; }, kWait));
  for (const auto& m : gateway->messages()) {
    EXPECT_NE(m.payload, "forged") << m.topic;
  }

  // Subscribing to B's topics, wildcards over devices or internal topics: refused.
  for (const char* filter : FiltersRefusedToA()) {
    EXPECT_EQ(a->Subscribe(filter, 1), kV5NotAuthorized) << filter;
  }
  EXPECT_EQ(a->Subscribe("$oc/devices/p1_a/#", 1), 1);
  // B's report reaches the gateway but not A.
  EXPECT_EQ(b->Publish("$oc/devices/p1_b/sys/properties/report", "from-b", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "from-b"; }, kWait));
  EXPECT_EQ(a->Publish("$oc/devices/p1_a/sys/messages/up", "a-marker", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "a-marker"; }, kWait));
  // A's own subscription sees no uplink (its own goes to iot/up/..., as in IoTDA a device's
  // uplink is not echoed back), never B's; its downlink still arrives exactly once.
  EXPECT_LT(gateway->Publish("$iot/down/p1_a/sys/messages/down", "down-a", 1), 0x80);
  ASSERT_TRUE(
      a->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "down-a"; }, kWait));
  for (const auto& m : a->messages()) {
    EXPECT_NE(m.payload, "from-b");
    EXPECT_NE(m.payload, "a-marker");
  }
  EXPECT_EQ(a->messages().size(), 1U);
  // B got nothing from A's forged downlink.
  EXPECT_TRUE(b->messages().empty());
}

TEST_F(PluginTest, CommandLineClientsAreDeniedOtherDevicesTopics) {
  AddDevice("p1_a", "secret-a");
  AddDevice("p1_b", "secret-b");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);

  auto pub = CliArgs("mosquitto_pub", Device("p1_a", "secret-a"));
  pub.insert(pub.end(), {"-V", "5", "-q", "1", "-t", "$oc/devices/p1_b/sys/properties/report", "-m",
                         "forged-cli"});
  const auto [pub_rc, pub_out] = RunCli(pub);
  EXPECT_THAT(pub_out, HasSubstr("Not authorized")) << "exit " << pub_rc;

  auto sub = CliArgs("mosquitto_sub", Device("p1_a", "secret-a"));
  sub.insert(sub.end(), {"-t", "$oc/devices/p1_b/sys/#", "-W", "10"});
  const auto [sub_rc, sub_out] = RunCli(sub);
  // mosquitto_sub 2.0.11 exits 0 here, after saying so.
  EXPECT_THAT(sub_out, HasSubstr("All subscription requests were denied")) << "exit " << sub_rc;

  auto own = CliArgs("mosquitto_pub", Device("p1_a", "secret-a"));
  own.insert(own.end(),
             {"-q", "1", "-t", "$oc/devices/p1_a/sys/properties/report", "-m", "cli-marker"});
  EXPECT_EQ(RunCli(own).first, 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "cli-marker"; }, kWait));
  for (const auto& m : gateway->messages()) {
    EXPECT_NE(m.payload, "forged-cli");
  }
}

TEST_F(PluginTest, DevicePublishesAreNeverRetained) {
  // A retained device publish would be stored under its uplink partition and replayed to every
  // gateway that subscribes there (at each hand-over), and a device could fill the broker with
  // retained topics below user/: the plugin clears the flag of every device publish.
  AddDevice("p1_ret", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/p1_ret/#", 1), 1);
  for (const int protocol : {4, 5}) {
    auto device = Connect(Device("p1_ret", "s", 0, Now(), protocol));
    EXPECT_EQ(device->Publish("$oc/devices/p1_ret/sys/properties/report", "retained-report", 1,
                              kWait, {}, /*retain=*/true),
              0);
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(device->Publish(fmt::format("$oc/devices/p1_ret/user/t{}", i), "retained-user", 1,
                                kWait, {}, /*retain=*/true),
                0);
    }
  }
  // Delivered as usual to the subscriber already there.
  ASSERT_TRUE(gateway->WaitForCount(42, kWait));
  // Nothing retained for one that subscribes afterwards: the marker, published after the
  // subscription, is all it gets (retained messages would have come first, with the SUBACK).
  auto later = Gateway("gateway-later");
  ASSERT_EQ(later->Subscribe("iot/up/+/p1_ret/#", 1), 1);
  ASSERT_EQ(later->Subscribe("iot/up/#", 1), 1);
  auto device = Connect(Device("p1_ret", "s"));
  ASSERT_EQ(device->Subscribe("$oc/devices/p1_ret/#", 1), 1);
  EXPECT_EQ(device->Publish("$oc/devices/p1_ret/sys/messages/up", "marker", 1), 0);
  ASSERT_TRUE(
      later->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "marker"; }, kWait));
  for (const auto& m : later->messages()) {
    EXPECT_EQ(m.payload, "marker") << m.topic << (m.retain ? " (retained)" : "");
  }
  EXPECT_TRUE(device->messages().empty());
}

// ---- Downlink relay ----

TEST_F(PluginTest, DownlinkReachesADeviceThatNeverSubscribed) {
  AddDevice("p1_down", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/#", 1), 1);  // must not see the internal message itself
  auto device = Connect(Device("p1_down", "s"));

  const std::string command =
      R"({"object_device_id":"p1_down","service_id":"s","command_name":"reboot","paras":{}})";
  // Relayed: a success code. 0x00 here because this gateway's `$iot/#` matches the internal
  // topic (it is never delivered to it); 0x10 "no matching subscribers" otherwise.
  EXPECT_EQ(gateway->Publish("$iot/down/p1_down/sys/commands/request_id=42", command, 1), 0x00);
  ASSERT_TRUE(device->WaitForCount(1, kWait));
  auto received = device->messages();
  EXPECT_EQ(received[0].topic, "$oc/devices/p1_down/sys/commands/request_id=42");
  EXPECT_EQ(received[0].payload, command);
  EXPECT_EQ(received[0].qos, 1);

  EXPECT_LT(gateway->Publish("$iot/down/p1_down/sys/messages/down", "raw", 0), 0x80);
  ASSERT_TRUE(device->WaitForCount(2, kWait));
  received = device->messages();
  EXPECT_EQ(received[1].topic, "$oc/devices/p1_down/sys/messages/down");
  EXPECT_EQ(received[1].qos, 0);

  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) {
        return m.topic == "$iot/down-result/p1_down" &&
               Json::parse(m.payload).value("topic", "") == "$oc/devices/p1_down/sys/messages/down";
      },
      kWait));
  for (const auto& m : gateway->messages()) {
    EXPECT_FALSE(m.topic.starts_with("$iot/down/")) << m.topic;
  }
  const auto result = Json::parse(gateway->messages_on("$iot/down-result/p1_down")[0].payload);
  EXPECT_EQ(result["status"], "relayed");
  EXPECT_EQ(result["topic"], "$oc/devices/p1_down/sys/commands/request_id=42");
}

TEST_F(PluginTest, OfflinePersistentSessionGetsWhatTheBrokerQueued) {
  // A gateway restarting with its persistent session must receive the reports the broker
  // queued while it was away: mosquitto checks read access when it queues for an offline
  // session, after the plugin has forgotten that connection.
  const TestClient::Options options{.port = broker_->port(),
                                    .client_id = "gateway-persistent",
                                    .username = std::string(kGatewayUser),
                                    .password = std::string(kGatewayPassword),
                                    .protocol = 4,
                                    .clean_session = false};
  {
    auto gateway = Connect(options);
    // One partition's session, as a gateway replica holds it (broker/README.md, Uplink).
    ASSERT_EQ(gateway->Subscribe(
                  fmt::format("iot/up/{}/#", broker::UplinkPartition("p1_queued", kPartitions)), 1),
              1);
  }
  AddDevice("p1_queued", "s");
  auto device = Connect(Device("p1_queued", "s"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_LT(
        device->Publish("$oc/devices/p1_queued/sys/properties/report", R"({"services":[]})", 1),
        0x80);
  }
  auto restarted = Connect(options);
  ASSERT_TRUE(restarted->WaitForCount(3, kWait)) << broker_->dir();
  for (const auto& m : restarted->messages()) {
    EXPECT_EQ(m.topic, Up("p1_queued", "sys/properties/report"));
  }
}

// ---- Message ids (README.md, Message ids) ----

constexpr char kMessageId[] = "iot-message-id";

TEST_F(PluginTest, EveryRelayedUplinkCarriesAnIdThatTheDeviceCannotChoose) {
  AddDevice("p1_ids", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);
  auto v311 = Connect(Device("p1_ids", "s"));
  EXPECT_EQ(v311->Publish("$oc/devices/p1_ids/sys/messages/up", "one", 1), 0);
  EXPECT_EQ(v311->Publish("$oc/devices/p1_ids/sys/messages/up", "two", 1), 0);
  v311.reset();
  // An MQTT 5 device that sets the id itself, next to a property of its own.
  auto v5 = Connect(Device("p1_ids", "s", 0, Now(), 5));
  EXPECT_EQ(v5->Publish("$oc/devices/p1_ids/sys/messages/up", "forged", 1, kWait,
                        {{kMessageId, "chosen-by-the-device"}, {"trace", "t-1"}}),
            0);
  ASSERT_TRUE(gateway->WaitForCount(3, kWait)) << BrokerLog();
  std::set<std::string> ids;
  for (const auto& m : gateway->messages()) {
    EXPECT_EQ(m.topic, Up("p1_ids", "sys/messages/up"));
    const std::string id = m.Property(kMessageId);
    EXPECT_FALSE(id.empty()) << m.payload;
    EXPECT_NE(id, "chosen-by-the-device");
    ids.insert(id);
    size_t count = 0;
    for (const auto& [name, value] : m.user_properties) {
      count += name == kMessageId ? 1U : 0U;
    }
    EXPECT_EQ(count, 1U) << m.payload;  // one id, the plugin's
  }
  EXPECT_EQ(ids.size(), 3U);
  EXPECT_EQ(gateway->messages()[2].Property("trace"), "t-1");  // the device's own stays
}

TEST_F(PluginTest, PresenceEventsCarryOneIdOnBothTopics) {
  AddDevice("p1_pid", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/presence/p1_pid", 1), 1);
  ASSERT_EQ(gateway->Subscribe("iot/presence/+/p1_pid", 1), 1);
  Connect(Device("p1_pid", "s")).reset();
  ASSERT_TRUE(gateway->WaitForCount(4, kWait));
  std::map<std::string, std::set<std::string>> ids;  // event -> ids over both topics
  for (const auto& m : gateway->messages()) {
    ids[Json::parse(m.payload)["event"]].insert(m.Property(kMessageId));
  }
  ASSERT_EQ(ids["connected"].size(), 1U);
  ASSERT_EQ(ids["disconnected"].size(), 1U);
  EXPECT_FALSE(ids["connected"].begin()->empty());
  EXPECT_NE(*ids["connected"].begin(), *ids["disconnected"].begin());
}

TEST_F(PluginTest, MessageIdsSurviveABrokerRestart) {
  // What the broker keeps for an offline session keeps its id through a restart: the message
  // store is persisted with the messages' properties.
  iot::testing::TempDir store("iot-persistence");
  StartBroker(fmt::format("persistence true\npersistence_location {}/", store.path().string()));
  AddDevice("p1_keep", "s");
  const std::string filter =
      fmt::format("iot/up/{}/#", broker::UplinkPartition("p1_keep", kPartitions));
  // The gateway's partition session, away (MQTT 3.1.1: the session outlives the connection).
  TestClient::Options offline{.port = broker_->port(),
                              .client_id = "gateway-p-offline",
                              .username = std::string(kGatewayUser),
                              .password = std::string(kGatewayPassword),
                              .protocol = 4,
                              .clean_session = false};
  ASSERT_EQ(Connect(offline)->Subscribe(filter, 1), 1);
  auto live = Gateway("gateway-live");
  ASSERT_EQ(live->Subscribe(filter, 1), 1);
  {
    auto device = Connect(Device("p1_keep", "s"));
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(device->Publish("$oc/devices/p1_keep/sys/messages/up", std::to_string(i), 1), 0);
    }
  }
  ASSERT_TRUE(live->WaitForCount(3, kWait));
  std::map<std::string, std::string> before;  // payload -> id, as delivered before the restart
  for (const auto& m : live->messages()) {
    before[m.payload] = m.Property(kMessageId);
  }
  live.reset();
  broker_->Stop();  // SIGTERM: mosquitto saves its store
  broker_->Start();
  offline.protocol = 5;  // resumes the same session, and sees properties
  auto back = Connect(offline);
  ASSERT_TRUE(back->WaitForCount(3, kWait)) << BrokerLog();
  std::map<std::string, std::string> after;
  for (const auto& m : back->messages()) {
    after[m.payload] = m.Property(kMessageId);
  }
  ASSERT_EQ(before.size(), 3U);
  EXPECT_EQ(after, before);
  for (const auto& [payload, id] : after) {
    EXPECT_FALSE(id.empty()) << payload;
  }
}

// ---- Wills (README.md, Wills) ----

TEST_F(PluginTest, AWillOnTheDevicesOwnUpTopicReachesTheGatewaysLikeAnyUplink) {
  AddDevice("p1_will", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);
  ASSERT_EQ(gateway->Subscribe("$oc/devices/+/sys/#", 1), 1);
  TestClient::Options options = Device("p1_will", "s");
  options.will_topic = "$oc/devices/p1_will/sys/events/up";
  options.will_payload = R"({"services":[{"service_id":"meter","event_type":"power_lost"}]})";
  auto device = Connect(options);
  device->Drop();  // lost power: the broker sends the will
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.topic == Up("p1_will", "sys/events/up"); }, kWait))
      << BrokerLog();
  const auto relayed = gateway->messages_on(Up("p1_will", "sys/events/up"));
  ASSERT_EQ(relayed.size(), 1U);
  EXPECT_EQ(relayed[0].payload, options.will_payload);
  EXPECT_EQ(relayed[0].qos, 1);
  EXPECT_FALSE(relayed[0].Property(kMessageId).empty());
  // Not parked on the device topic.
  EXPECT_TRUE(gateway->messages_on("$oc/devices/p1_will/sys/events/up").empty());
  EXPECT_THAT(BrokerLog(), HasSubstr("relayed the will of device 'p1_will'"));

  // A will on someone else's topic goes nowhere.
  AddDevice("p1_bad_will", "s");
  TestClient::Options bad = Device("p1_bad_will", "s");
  bad.will_topic = "$oc/devices/p1_will/sys/events/up";
  bad.will_payload = "forged";
  Connect(bad)->Drop();
  // Its disconnect presence is published after the will would have been: wait for that.
  ASSERT_EQ(gateway->Subscribe("$iot/presence/p1_bad_will", 1), 1);
  AddDevice("p1_marker", "s");
  auto marker = Connect(Device("p1_marker", "s"));
  EXPECT_EQ(marker->Publish("$oc/devices/p1_marker/sys/messages/up", "after", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.topic == Up("p1_marker", "sys/messages/up"); },
      kWait));
  for (const auto& m : gateway->messages()) {
    EXPECT_NE(m.payload, "forged") << m.topic;
  }
}

TEST_F(PluginTest, AWillIsNeverRetainedNorSentToAnInternalTopic) {
  // Issue #15, item 2: a retained will on the device's own up-topic is relayed like any uplink
  // and stored nowhere; a will on an internal topic (its own uplink partition, presence) goes
  // nowhere at all.
  AddDevice("p1_rwill", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);
  TestClient::Options retained = Device("p1_rwill", "s", 0, Now(), 5);
  retained.will_topic = "$oc/devices/p1_rwill/sys/events/up";
  retained.will_payload = "retained-will";
  retained.will_retain = true;
  Connect(retained)->Drop();
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "retained-will"; }, kWait));
  for (const std::string& topic :
       {Up("p1_rwill", "sys/events/up"), std::string("$iot/presence/p1_rwill")}) {
    TestClient::Options internal = Device("p1_rwill", "s");
    internal.will_topic = topic;
    internal.will_payload = "forged-will";
    internal.will_retain = true;
    Connect(internal)->Drop();
  }
  // After those wills would have gone: a marker of another device.
  AddDevice("p1_rmark", "s");
  auto marker = Connect(Device("p1_rmark", "s"));
  EXPECT_EQ(marker->Publish("$oc/devices/p1_rmark/sys/messages/up", "after", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "after"; },
                                      kWait));
  for (const auto& m : gateway->messages()) {
    EXPECT_NE(m.payload, "forged-will") << m.topic;
  }
  // A session subscribing afterwards gets nothing retained (retained messages would come with
  // the SUBACK, before the marker published after it).
  auto later = Gateway("gateway-later");
  ASSERT_EQ(later->Subscribe("iot/up/#", 1), 1);
  ASSERT_EQ(later->Subscribe("$iot/presence/+", 1), 1);
  EXPECT_EQ(marker->Publish("$oc/devices/p1_rmark/sys/messages/up", "marker", 1), 0);
  ASSERT_TRUE(
      later->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "marker"; }, kWait));
  for (const auto& m : later->messages()) {
    EXPECT_FALSE(m.retain) << m.topic << ": " << m.payload;
    EXPECT_NE(m.payload, "retained-will") << m.topic;
    EXPECT_NE(m.payload, "forged-will") << m.topic;
  }
}

TEST_F(PluginTest, PartitionCountIsAnnouncedRetainedToServiceAccountsOnly) {
  // The gateways learn how many partitions to consume from the broker itself, so the two can
  // never disagree (a partition nobody consumes would lose its messages).
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe(std::string(broker::kPartitionsTopic), 1), 1);
  ASSERT_TRUE(gateway->WaitForCount(1, kWait));
  EXPECT_EQ(gateway->messages()[0].topic, broker::kPartitionsTopic);
  EXPECT_EQ(gateway->messages()[0].payload, std::to_string(kPartitions));
  EXPECT_TRUE(gateway->messages()[0].retain);

  AddDevice("p1_cfg", "s");
  auto device = Connect(Device("p1_cfg", "s", 0, Now(), 5));
  EXPECT_EQ(device->Subscribe(std::string(broker::kPartitionsTopic), 1), kV5NotAuthorized);
  EXPECT_EQ(device->Publish(std::string(broker::kPartitionsTopic), "1", 1), kV5NotAuthorized);
}

TEST_F(PluginTest, DownlinkToAnOfflineDeviceTellsTheGateway) {
  AddDevice("p1_off", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/down-result/+", 1), 1);

  EXPECT_EQ(gateway->Publish("$iot/down/p1_off/sys/commands/request_id=1", "{}", 1),
            kV5NotAuthorized);
  ASSERT_TRUE(gateway->WaitForCount(1, kWait));
  auto result = Json::parse(gateway->messages()[0].payload);
  EXPECT_EQ(gateway->messages()[0].topic, "$iot/down-result/p1_off");
  EXPECT_EQ(result["status"], "offline");
  EXPECT_EQ(result["device_id"], "p1_off");
  EXPECT_EQ(result["topic"], "$oc/devices/p1_off/sys/commands/request_id=1");

  {
    auto device = Connect(Device("p1_off", "s"));
    EXPECT_EQ(gateway->Publish("$iot/down/p1_off/sys/commands/request_id=2", "{}", 1),
              kV5NoMatchingSubscribers);
    ASSERT_TRUE(device->WaitForCount(1, kWait));
    device->Disconnect();
  }
  // Offline again once it disconnected; also for malformed downlink topics.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return gateway->Publish("$iot/down/p1_off/sys/commands/request_id=3", "{}", 1) ==
               kV5NotAuthorized;
      },
      kWait));
  EXPECT_EQ(gateway->Publish("$iot/down/p1_off", "{}", 1), kV5NotAuthorized);
  EXPECT_EQ(gateway->Publish("$iot/down/p1_off/elsewhere/x", "{}", 1), kV5NotAuthorized);
}

TEST_F(PluginTest, SubscribedDeviceGetsEachDownlinkOnce) {
  AddDevice("p1_sub", "s");
  auto gateway = Gateway();
  auto device = Connect(Device("p1_sub", "s"));
  ASSERT_EQ(device->Subscribe("$oc/devices/p1_sub/sys/#", 1), 1);
  ASSERT_EQ(device->Subscribe("$oc/devices/p1_sub/#", 1), 1);

  for (int i = 1; i <= 3; ++i) {
    EXPECT_LT(gateway->Publish(fmt::format("$iot/down/p1_sub/sys/commands/request_id={}", i),
                               fmt::format("cmd-{}", i), 1),
              0x80);
  }
  ASSERT_TRUE(device->WaitForCount(3, kWait));
  // A last message: once it is in, any duplicate of the earlier ones would be too.
  EXPECT_LT(gateway->Publish("$iot/down/p1_sub/sys/messages/down", "last", 1), 0x80);
  ASSERT_TRUE(
      device->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "last"; }, kWait));
  EXPECT_THAT(Payloads(*device), ::testing::ElementsAre("cmd-1", "cmd-2", "cmd-3", "last"));
}

// ---- Presence ----

TEST_F(PluginTest, PresenceEventsOnConnectAndDisconnect) {
  AddDevice("p1_pres", "s");
  auto gateway = Gateway();
  // Not `$share/gateway/$iot/presence/+`: mosquitto 2.0.11 never delivers `$` topics to shared
  // subscriptions (see broker/README.md).
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);
  // The same events in the device's uplink partition, for the gateway replica holding it.
  auto shared = Gateway("gateway-partition");
  ASSERT_EQ(shared->Subscribe("iot/presence/+/+", 1), 1);

  const auto options = Device("p1_pres", "s");
  auto device = Connect(options);
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "p1_pres").size() == 1; }, kWait));
  device->Disconnect();
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "p1_pres").size() == 2; }, kWait));
  ASSERT_TRUE(shared->WaitForCount(2, kWait));
  EXPECT_EQ(shared->messages_on(broker::PartitionedPresenceTopic("p1_pres", kPartitions)).size(),
            2U);

  const auto events = Presence(*gateway, "p1_pres");
  EXPECT_EQ(events[0]["event"], "connected");
  EXPECT_EQ(events[1]["event"], "disconnected");
  for (const auto& event : events) {
    EXPECT_EQ(event["device_id"], "p1_pres");
    EXPECT_EQ(event["client_id"], options.client_id);
    EXPECT_EQ(event["client_address"], "127.0.0.1");
    EXPECT_EQ(event["tenant_id"], "t1");
    EXPECT_EQ(event["product_id"], "p1");
    EXPECT_EQ(event["node_id"], "pres");
    EXPECT_TRUE(event["reason"].is_string());
    EXPECT_THAT(event["time"].get<std::string>(),
                ::testing::MatchesRegex(
                    R"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z)"));
  }
  EXPECT_LT(events[0]["seq"].get<int>(), events[1]["seq"].get<int>());
  EXPECT_EQ(events[1]["reason"], "connection_closed");
  const auto presence = gateway->messages_on("$iot/presence/p1_pres");
  EXPECT_EQ(presence[0].qos, 1);
}

TEST_F(PluginTest, PresenceOfDeviceIdsThatNeedEscapingIsValidJson) {
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/presence/#", 1), 1);
  for (const std::string id : {R"(p1_q"u\o)", "p1_\xc3\xbcml\xc3\xa4ut"}) {
    AddDevice(id, "s");
    auto device = Connect(Device(id, "s"));
    ASSERT_TRUE(
        WaitUntil([&] { return gateway->messages_on("$iot/presence/" + id).size() == 1; }, kWait))
        << id;
    const auto event = Json::parse(gateway->messages_on("$iot/presence/" + id)[0].payload);
    EXPECT_EQ(event["device_id"], id);
    EXPECT_EQ(event["node_id"], id.substr(3));
  }
}

TEST_F(PluginTest, ReconnectReplacesTheOldConnectionInOrder) {
  AddDevice("p1_re", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);

  const auto first_options = Device("p1_re", "s");
  auto first = Connect(first_options);
  // Same device, new client id (another timestamp): the first connection is closed.
  const auto second_options =
      Device("p1_re", "s", 0, Timestamp(std::chrono::system_clock::now() - 1h));
  auto second = Connect(second_options);
  EXPECT_TRUE(first->WaitDisconnected(kWait));
  // Same client id again: mosquitto's own takeover, with the same events.
  auto third = Connect(second_options);
  EXPECT_TRUE(second->WaitDisconnected(kWait));

  // Downlink goes to the current connection only.
  EXPECT_LT(gateway->Publish("$iot/down/p1_re/sys/messages/down", "to-third", 1), 0x80);
  ASSERT_TRUE(third->WaitForCount(1, kWait));

  third->Disconnect();
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "p1_re").size() == 6; }, kWait));
  const auto events = Presence(*gateway, "p1_re");
  std::vector<std::string> seen;
  seen.reserve(events.size());
  for (const auto& e : events) {
    seen.push_back(fmt::format("{} {} {}", e["event"].get<std::string>(),
                               e["client_id"].get<std::string>(), e["reason"].get<std::string>()));
  }
  EXPECT_THAT(seen, ::testing::ElementsAre(
                        "connected " + first_options.client_id + " connect",
                        "disconnected " + first_options.client_id + " replaced",
                        "connected " + second_options.client_id + " connect",
                        "disconnected " + second_options.client_id + " replaced",
                        "connected " + second_options.client_id + " connect",
                        "disconnected " + second_options.client_id + " connection_closed"));
  EXPECT_TRUE(first->messages().empty());
  EXPECT_TRUE(second->messages().empty());
}

// ---- Frozen / deleted while connected ----

TEST_F(PluginTest, DeviceFrozenWhileConnectedIsDisconnected) {
  AddDevice("p1_fz", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);
  auto device = Connect(Device("p1_fz", "s"));

  Redis({"HSET", "tm:dev:p1_fz", "frozen", "1", "version", "2"});
  NotifyChange("p1_fz", "upsert", true);
  EXPECT_TRUE(device->WaitDisconnected(kKickDeadline));
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "p1_fz").size() == 2; }, kWait));
  EXPECT_EQ(Presence(*gateway, "p1_fz")[1]["reason"], "frozen");
  EXPECT_EQ(TryConnect(Device("p1_fz", "s")), kV311NotAuthorized);

  // Unfrozen: it may connect again.
  Redis({"HSET", "tm:dev:p1_fz", "frozen", "0", "version", "3"});
  NotifyChange("p1_fz", "upsert", false);
  EXPECT_TRUE(WaitUntil([&] { return TryConnect(Device("p1_fz", "s")) == 0; }, kWait));
}

TEST_F(PluginTest, DeviceDeletedWhileConnectedIsDisconnected) {
  AddDevice("p1_del", "s");
  AddDevice("p1_keep", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);
  auto device = Connect(Device("p1_del", "s"));
  auto other = Connect(Device("p1_keep", "s"));

  Redis({"DEL", "tm:dev:p1_del"});
  NotifyChange("p1_del", "delete", false);
  EXPECT_TRUE(device->WaitDisconnected(kKickDeadline));
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "p1_del").size() == 2; }, kWait));
  EXPECT_EQ(Presence(*gateway, "p1_del")[1]["reason"], "deleted");
  EXPECT_TRUE(other->connected());
  EXPECT_EQ(TryConnect(Device("p1_del", "s")), kV311NotAuthorized);
}

TEST_F(PluginTest, PeriodicRecheckCatchesAMissedNotification) {
  StartBroker("plugin_opt_recheck_interval_ms 500");
  AddDevice("p1_quiet", "s");
  auto device = Connect(Device("p1_quiet", "s"));
  Redis({"HSET", "tm:dev:p1_quiet", "frozen", "1"});  // no PUBLISH on tm:changes
  EXPECT_TRUE(device->WaitDisconnected(kKickDeadline));
}

// ---- The credential projection in memory ----

/// Waits for the plugin's "credential projection loaded" line; returns it.
std::string WaitForProjectionLine(const std::function<std::string()>& log) {
  std::string line;
  WaitUntil(
      [&] {
        const std::string text = log();
        const size_t at = text.find("credential projection loaded");
        if (at == std::string::npos) {
          return false;
        }
        line = text.substr(at, text.find('\n', at) - at);
        return true;
      },
      kWait);
  return line;
}

class ProjectionTest : public PluginTest {
 protected:
  std::string WaitForLoad() {
    return WaitForProjectionLine([this] { return BrokerLog(); });
  }

  /// HGETALLs Redis has served since the last CONFIG RESETSTAT.
  int64_t HgetallCalls() {
    auto reply = redis_client_->Command({"INFO", "commandstats"});
    EXPECT_TRUE(reply.ok()) << reply.status();
    const std::string text = reply.ok() ? reply->str : "";
    const size_t at = text.find("cmdstat_hgetall:calls=");
    if (at == std::string::npos) {
      return 0;
    }
    return std::stoll(text.substr(at + std::string("cmdstat_hgetall:calls=").size()));
  }
};

TEST_F(ProjectionTest, LoadedAtStartSoKnownDevicesConnectWithoutAskingRedis) {
  AddDevice("p1_a", "sa");
  AddDevice("p1_b", "sb");
  AddDevice("p1_frozen", "sf", /*frozen=*/true);
  StartBroker("plugin_opt_cache_ttl_ms 100");
  EXPECT_THAT(WaitForLoad(), HasSubstr("loaded: 3 devices"));
  // Past the TTL: records kept current by tm:changes do not expire.
  std::this_thread::sleep_for(200ms);

  Redis({"CONFIG", "RESETSTAT"});
  EXPECT_EQ(TryConnect(Device("p1_a", "sa")), 0);
  EXPECT_EQ(TryConnect(Device("p1_b", "sb")), 0);
  EXPECT_EQ(TryConnect(Device("p1_b", "wrong")), kV311NotAuthorized);
  EXPECT_EQ(TryConnect(Device("p1_frozen", "sf")), kV311NotAuthorized);
  EXPECT_EQ(HgetallCalls(), 0) << "a device in the projection needs no Redis read";

  // Created a moment ago, its change not yet seen: one Redis read, then known.
  AddDevice("p1_new", "sn");
  EXPECT_EQ(TryConnect(Device("p1_new", "sn")), 0);
  EXPECT_EQ(HgetallCalls(), 1);
  EXPECT_EQ(TryConnect(Device("p1_new", "sn")), 0);
  EXPECT_EQ(HgetallCalls(), 1);
  EXPECT_EQ(TryConnect(Device("p1_nobody", "s")), kV311NotAuthorized);
}

TEST_F(ProjectionTest, ChangesAreAppliedToTheDevicesHeld) {
  AddDevice("p1_chg", "old-secret");
  StartBroker();
  WaitForLoad();
  EXPECT_EQ(TryConnect(Device("p1_chg", "old-secret")), 0);

  // The secret is reset: the new one works as soon as the change is seen, the old one no more.
  auto box = common::SecretBox::FromKeyText(kSecretKey);
  Redis({"HSET", "tm:dev:p1_chg", "secret", box->Seal("new-secret", "p1_chg"), "version", "2"});
  NotifyChange("p1_chg", "upsert", false);
  EXPECT_TRUE(WaitUntil([&] { return TryConnect(Device("p1_chg", "new-secret")) == 0; }, kWait));
  EXPECT_EQ(TryConnect(Device("p1_chg", "old-secret")), kV311NotAuthorized);

  // Frozen while not connected: refused from the next connect on.
  Redis({"HSET", "tm:dev:p1_chg", "frozen", "1", "version", "3"});
  NotifyChange("p1_chg", "upsert", true);
  EXPECT_TRUE(WaitUntil(
      [&] { return TryConnect(Device("p1_chg", "new-secret")) == kV311NotAuthorized; }, kWait));

  // Created and announced: the plugin reads it when the change arrives, so its connect needs no
  // Redis read of its own.
  Redis({"CONFIG", "RESETSTAT"});
  AddDevice("p1_born", "sb");
  NotifyChange("p1_born", "upsert", false);
  ASSERT_TRUE(WaitUntil([&] { return HgetallCalls() == 1; }, kWait));
  EXPECT_EQ(TryConnect(Device("p1_born", "sb")), 0);
  EXPECT_EQ(HgetallCalls(), 1);

  // Deleted: refused.
  Redis({"DEL", "tm:dev:p1_born"});
  NotifyChange("p1_born", "delete", false);
  EXPECT_TRUE(
      WaitUntil([&] { return TryConnect(Device("p1_born", "sb")) == kV311NotAuthorized; }, kWait));
}

TEST_F(ProjectionTest, PeriodicResyncReplacesWhatAMissedChangeLeftStale) {
  AddDevice("p1_rs", "old-secret");
  StartBroker("plugin_opt_recheck_interval_ms 300");
  WaitForLoad();
  EXPECT_EQ(TryConnect(Device("p1_rs", "old-secret")), 0);

  auto box = common::SecretBox::FromKeyText(kSecretKey);
  Redis({"HSET", "tm:dev:p1_rs", "secret", box->Seal("new-secret", "p1_rs"), "frozen", "0",
         "version", "2"});  // no PUBLISH on tm:changes
  // Well before the 5 s TTL: the resync, not an expiry, replaced the record.
  EXPECT_TRUE(WaitUntil([&] { return TryConnect(Device("p1_rs", "new-secret")) == 0; }, 3s));
  EXPECT_EQ(TryConnect(Device("p1_rs", "old-secret")), kV311NotAuthorized);
}

TEST_F(ProjectionTest, LostSubscriptionMeansNoRecordIsTrustedBeyondTheTtl) {
  AddDevice("p1_sub", "s");
  StartBroker();
  WaitForLoad();
  auto device = Connect(Device("p1_sub", "s"));

  // The subscriber's connection is closed and the device frozen while it is away (its
  // notification is lost): the resubscription's reload finds it.
  Redis({"CLIENT", "KILL", "TYPE", "pubsub"});
  Redis({"HSET", "tm:dev:p1_sub", "frozen", "1", "version", "2"});
  EXPECT_TRUE(device->WaitDisconnected(kKickDeadline));
  EXPECT_EQ(TryConnect(Device("p1_sub", "s")), kV311NotAuthorized);
}

TEST_F(ProjectionTest, SilentRedisIsNoticedByTheHeartbeatAndTheProjectionReloaded) {
  AddDevice("p1_hb", "s");
  StartBroker();
  WaitForLoad();
  // Redis stops answering without closing the connection (as behind a partition).
  Redis({"CLIENT", "PAUSE", "4000", "ALL"});
  EXPECT_TRUE(WaitUntil(
      [&] { return BrokerLog().find("no answer from Redis") != std::string::npos; }, kWait));
  // Once Redis answers again, the subscriber is back and reloads the projection.
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::string log = BrokerLog();
        return log.rfind("credential projection loaded") > log.find("no answer from Redis");
      },
      kWait));
  EXPECT_EQ(TryConnect(Device("p1_hb", "s")), 0);
}

TEST_F(ProjectionTest, WhileTheProjectionIsRebuiltAMissingKeyKicksNobodyAndAdmitsNobody) {
  AddDevice("p1_gone", "s");
  AddDevice("p1_online", "s");
  StartBroker("plugin_opt_cache_ttl_ms 300");
  WaitForLoad();
  auto online = Connect(Device("p1_online", "s"));

  // Redis flushed: thing-model has not rewritten these keys nor marked the projection ready.
  Redis({"DEL", "tm:projection:ready", "tm:dev:p1_gone", "tm:dev:p1_online"});
  NotifyChange("p1_gone", "delete", false);
  NotifyChange("p1_online", "delete", false);
  EXPECT_TRUE(
      WaitUntil([&] { return TryConnect(Device("p1_gone", "s")) == kV311NotAuthorized; }, kWait));
  EXPECT_FALSE(online->WaitDisconnected(1s));
}

TEST_F(ProjectionTest, CapacityBoundsTheDevicesHeldAndTheRestAreReadFromRedis) {
  for (int i = 0; i < 6; ++i) {
    AddDevice(fmt::format("p1_c{}", i), "s");
  }
  StartBroker("plugin_opt_cache_size 3");
  const std::string line = WaitForLoad();
  EXPECT_THAT(line, HasSubstr("loaded: 3 devices"));
  EXPECT_THAT(line, HasSubstr("capacity reached"));
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 6; ++i) {
      EXPECT_EQ(TryConnect(Device(fmt::format("p1_c{}", i), "s")), 0) << i;
    }
  }
  // Least recently used records made room: the last three connected are held, the first not.
  Redis({"CONFIG", "RESETSTAT"});
  EXPECT_EQ(TryConnect(Device("p1_c5", "s")), 0);
  EXPECT_EQ(HgetallCalls(), 0);
  EXPECT_EQ(TryConnect(Device("p1_c0", "s")), 0);
  EXPECT_EQ(HgetallCalls(), 1);
}

TEST_F(ProjectionTest, RedisDownAfterTheLoadRefusesUnknownAndFrozenDevices) {
  AddDevice("p1_held", "s");
  AddDevice("p1_cold", "s", /*frozen=*/true);
  StartBroker();
  WaitForLoad();
  redis_->Stop();
  EXPECT_EQ(TryConnect(Device("p1_unknown", "s")), kV311NotAuthorized);
  EXPECT_EQ(TryConnect(Device("p1_cold", "s")), kV311NotAuthorized);
  EXPECT_EQ(TryConnect(Device("p1_held", "wrong")), kV311NotAuthorized);
  // Known and not frozen: still admitted during the outage (cache_max_stale).
  EXPECT_EQ(TryConnect(Device("p1_held", "s")), 0);
  EXPECT_THAT(BrokerLog(), HasSubstr("stale"));
}

TEST_F(ProjectionTest, SecretSealedWithAnotherKeyIsRefusedAndLogged) {
  auto other = common::SecretBox::FromKeyText(std::string(64, 'a'));
  ASSERT_TRUE(other.ok());
  Redis({"HSET", "tm:dev:p1_badkey", "tenant_id", "t1", "product_id", "p1", "node_id", "badkey",
         "frozen", "0", "secret", other->Seal("s", "p1_badkey"), "version", "1"});
  StartBroker();
  WaitForLoad();
  EXPECT_EQ(TryConnect(Device("p1_badkey", "s")), kV311NotAuthorized);
  EXPECT_THAT(BrokerLog(), HasSubstr("cannot open the sealed secret of device 'p1_badkey'"));
}

// ---- Connect floods ----

TEST_F(ProjectionTest, UnknownIdsAreHeldApartAndCannotEvictRealDevices) {
  for (int i = 0; i < 5; ++i) {
    AddDevice(fmt::format("p1_real{}", i), "s");
  }
  StartBroker("plugin_opt_cache_size 5");
  EXPECT_THAT(WaitForLoad(), HasSubstr("loaded: 5 devices"));
  // Well-formed client ids of devices that do not exist: one Redis read each, then answered from
  // memory for the short TTL of "no such device".
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(TryConnect(Device(fmt::format("p1_bogus{}", i), "s")), kV311NotAuthorized);
  }
  Redis({"CONFIG", "RESETSTAT"});
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(TryConnect(Device(fmt::format("p1_bogus{}", i), "s")), kV311NotAuthorized);
  }
  EXPECT_EQ(HgetallCalls(), 0) << "a repeated unknown id is answered from memory";
  // The real devices' credentials are all still held: they connect with Redis gone.
  redis_->Stop();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(TryConnect(Device(fmt::format("p1_real{}", i), "s")), 0) << i;
  }
}

TEST_F(ProjectionTest, AnUnknownIdIsAdmittedAsSoonAsItsCreationIsAnnounced) {
  StartBroker("plugin_opt_unknown_cache_ttl_ms 60000");
  WaitForLoad();
  EXPECT_EQ(TryConnect(Device("p1_late", "s")), kV311NotAuthorized);
  // Written without an announcement: the "no such device" answer stands (no Redis read).
  AddDevice("p1_late", "s");
  Redis({"CONFIG", "RESETSTAT"});
  EXPECT_EQ(TryConnect(Device("p1_late", "s")), kV311NotAuthorized);
  EXPECT_EQ(HgetallCalls(), 0);
  // Announced on tm:changes, as thing-model does: admitted at once, long before the TTL.
  NotifyChange("p1_late", "upsert", false);
  EXPECT_TRUE(WaitUntil([&] { return TryConnect(Device("p1_late", "s")) == 0; }, kWait));
}

TEST_F(ProjectionTest, ConnectsThatNeedRedisAreLimitedPerSourceAddress) {
  AddDevice("p1_held", "s");
  StartBroker(
      "plugin_opt_connect_rate_per_address 1\nplugin_opt_connect_burst_per_address 5\n"
      "plugin_opt_stats_interval_ms 200");
  WaitForLoad();
  Redis({"CONFIG", "RESETSTAT"});
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(TryConnect(Device(fmt::format("p1_x{}", i), "s")), kV311NotAuthorized);
  }
  // The burst of 5, then one a second: the others were refused without asking Redis.
  const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);
  EXPECT_GE(HgetallCalls(), 5);
  EXPECT_LE(HgetallCalls(), 5 + static_cast<int64_t>(elapsed.count()) + 1);
  EXPECT_TRUE(WaitUntil(
      [&] {
        return BrokerLog().find("over the limit of 1 connects/s from 127.0.0.1") !=
               std::string::npos;
      },
      kWait));
  // A device held in memory still connects from that address, and another address still gets
  // its unknown ids looked up.
  EXPECT_EQ(TryConnect(Device("p1_held", "s")), 0);
  Redis({"CONFIG", "RESETSTAT"});
  auto other = Device("p1_y", "s");
  other.bind_address = "127.0.0.2";
  EXPECT_EQ(TryConnect(other), kV311NotAuthorized);
  EXPECT_EQ(HgetallCalls(), 1);
  // The periodic line counts what the guard did and how long the broker thread waited on Redis.
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::string log = BrokerLog();
        return log.find("over the per-address limit") != std::string::npos &&
               log.find("Redis lookups on the broker thread, mean") != std::string::npos;
      },
      kWait))
      << BrokerLog();
}

TEST_F(ProjectionTest, BrokerThreadLookupsHaveAnOverallBudget) {
  StartBroker("plugin_opt_lookup_rate 3");
  WaitForLoad();
  Redis({"CONFIG", "RESETSTAT"});
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) {
    auto options = Device(fmt::format("p1_z{}", i), "s");
    options.bind_address = fmt::format("127.0.1.{}", i + 1);  // ten addresses: one each
    EXPECT_EQ(TryConnect(options), kV311NotAuthorized);
  }
  const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);
  EXPECT_GE(HgetallCalls(), 3);
  EXPECT_LE(HgetallCalls(), 3 + static_cast<int64_t>(3 * elapsed.count()) + 1);
  EXPECT_TRUE(WaitUntil(
      [&] { return BrokerLog().find("Redis lookups/s (lookup_rate)") != std::string::npos; },
      kWait));
}

// ---- Redis outage ----

TEST_F(PluginTest, RedisDownRefusesUnknownDevicesAndKeepsServing) {
  StartBroker("plugin_opt_cache_ttl_ms 100");
  AddDevice("p1_known", "s");
  AddDevice("p1_stay", "s");
  EXPECT_EQ(TryConnect(Device("p1_known", "s")), 0);  // now cached
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);
  auto staying = Connect(Device("p1_stay", "s"));

  redis_->Stop();
  EXPECT_EQ(TryConnect(Device("p1_unknown", "s")), kV311NotAuthorized);
  // A device seen recently: its (expired) cache entry is used while Redis is unreachable.
  auto known = Connect(Device("p1_known", "s"));
  EXPECT_TRUE(known->connected());
  // The broker keeps serving: connected devices, service accounts.
  EXPECT_EQ(staying->Publish("$oc/devices/p1_stay/sys/messages/up", "during-outage", 1), 0);
  EXPECT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "during-outage"; }, kWait));
  auto gateway2 = Gateway("gateway-2");
  EXPECT_TRUE(gateway2->connected());
  EXPECT_TRUE(staying->connected());

  // Redis back (empty, as after a restart without persistence): thing-model rebuilds the
  // projection and marks it ready; new devices connect without restarting anything.
  redis_->Start();
  ASSERT_TRUE(WaitUntil([&] { return redis_client_->Ping().ok(); }, kWait));
  AddDevice("p1_known", "s");
  AddDevice("p1_stay", "s");
  AddDevice("p1_new", "s");
  Redis({"SET", "tm:projection:ready", "1"});
  EXPECT_TRUE(WaitUntil([&] { return TryConnect(Device("p1_new", "s")) == 0; }, 30s));
  EXPECT_TRUE(staying->connected());
}

// ---- TLS ----

using iot::testing::TestPki;

TEST_F(PluginTest, CertificateDevicesAndPasswordDevicesOverTls) {
  TestPki pki;
  const std::string fingerprint = pki.Issue("p1_cert", "p1_cert");
  pki.Issue("p1_other", "p1_other");
  const uint16_t tls_port = iot::testing::FreePort();
  const uint16_t cert_port = iot::testing::FreePort();
  StartBroker(
      fmt::format("listener {} 127.0.0.1\ncertfile {}\nkeyfile {}\n"
                  "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n"
                  "require_certificate true\nuse_identity_as_username false\n",
                  tls_port, pki.Path("server.crt"), pki.Path("server.key"), cert_port,
                  pki.Path("ca.crt"), pki.Path("server.crt"), pki.Path("server.key")));
  // TestMosquitto waits for its first listener only.
  ASSERT_TRUE(iot::testing::WaitForPort(tls_port, kWait));
  ASSERT_TRUE(iot::testing::WaitForPort(cert_port, kWait));
  // A certificate-only device (no secret), written whole and announced: the plugin's projection
  // cannot have read it half-written (once a separate HSET and HDEL without a notification let
  // it keep a record with the secret and no fingerprint until its next resync).
  AddCertificateDevice("p1_cert", fingerprint);
  AddDevice("p1_pass", "pw");

  auto cert_device = [&](const std::string& id, const std::string& cert) {
    return TestClient::Options{.port = cert_port,
                               .client_id = fmt::format("{}_0_0_{}", id, Now()),
                               .username = id,
                               .password = std::nullopt,
                               .protocol = 4,
                               .clean_session = true,
                               .ca_file = pki.Path("ca.crt"),
                               .cert_file = pki.Path(cert + ".crt"),
                               .key_file = pki.Path(cert + ".key")};
  };
  // Its registered certificate, no password: accepted, and it may report.
  auto device = Connect(cert_device("p1_cert", "p1_cert"));
  EXPECT_EQ(device->Publish("$oc/devices/p1_cert/sys/properties/report", "{}", 1), 0);
  // Another (valid, same CA) certificate: refused. A device with no fingerprint: refused.
  EXPECT_EQ(TryConnect(cert_device("p1_cert", "p1_other")), kV311NotAuthorized);
  EXPECT_EQ(TryConnect(cert_device("p1_pass", "p1_other")), kV311NotAuthorized);
  // The certificate-only device has no password to sign with.
  auto no_cert = Device("p1_cert", "any-secret");
  no_cert.port = tls_port;
  no_cert.ca_file = pki.Path("ca.crt");
  EXPECT_EQ(TryConnect(no_cert), kV311NotAuthorized);

  // Password devices over server-authenticated TLS.
  auto password_device = Device("p1_pass", "pw");
  password_device.port = tls_port;
  password_device.ca_file = pki.Path("ca.crt");
  EXPECT_EQ(TryConnect(password_device), 0);
}

// ---- Reload ----

TEST_F(PluginTest, ConfigReloadKeepsConnectedDevicesAndTheirPresence) {
  // A broker of our own, to send it SIGHUP (mosquitto re-authenticates every client then).
  iot::testing::TempDir dir("iot-reload");
  const uint16_t port = iot::testing::FreePort();
  {
    std::ofstream out(dir.path() / "mosquitto.conf");
    out << "listener " << port << " 127.0.0.1\n"
        << "persistence false\n"
        << (::geteuid() == 0 ? "user root\n" : "") << PluginConfig("");
  }
  iot::testing::Process broker(iot::testing::Process::Options{
      .argv = {"mosquitto", "-c", (dir.path() / "mosquitto.conf").string()},
      .env = {},
      .log_file = dir.path() / "log",
      .run_as_user = {}});
  ASSERT_TRUE(iot::testing::WaitForPort(port, kWait)) << broker.Log();
  AddDevice("p1_hup", "s");
  AddDevice("p1_away", "s");
  auto gateway_options = TestClient::Options{.port = port,
                                             .client_id = "gw-reload",
                                             .username = kGatewayUser,
                                             .password = kGatewayPassword,
                                             .protocol = 5};
  auto gateway = Connect(gateway_options);
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/sys/#", 1), 1);
  auto device_options = Device("p1_hup", "s");
  device_options.port = port;
  auto device = Connect(device_options);
  // A device with a persistent session that went away: offline, its session kept.
  auto away_options = Device("p1_away", "s");
  away_options.port = port;
  away_options.clean_session = false;
  Connect(away_options)->Disconnect();
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "p1_away").size() == 2; }, kWait));

  broker.Signal(SIGHUP);
  ASSERT_TRUE(
      WaitUntil([&] { return broker.Log().find("Reloading config") != std::string::npos; }, kWait));
  EXPECT_EQ(device->Publish("$oc/devices/p1_hup/sys/messages/up", "after-reload", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "after-reload"; }, kWait));
  EXPECT_TRUE(device->connected());
  EXPECT_EQ(Presence(*gateway, "p1_hup").size(), 1u);
  EXPECT_EQ(Presence(*gateway, "p1_away").size(), 2u);
  // The offline device is still offline for downlink.
  EXPECT_EQ(gateway->Publish("$iot/down/p1_away/sys/messages/down", "x", 1), kV5NotAuthorized);
  EXPECT_LT(gateway->Publish("$iot/down/p1_hup/sys/messages/down", "y", 1), 0x80);
  EXPECT_TRUE(device->WaitForCount(1, kWait));
}

// ---- Configuration ----

TEST_F(PluginTest, SecretKeyFromTheEnvironment) {
  ::setenv("IOT_BROKER_TEST_SECRET_KEY", kSecretKey, 1);
  const std::string config = PluginConfig("");
  std::string with_env;
  std::istringstream lines(config);
  for (std::string line; std::getline(lines, line);) {
    with_env += line.starts_with("plugin_opt_secret_key ")
                    ? "plugin_opt_secret_key_env IOT_BROKER_TEST_SECRET_KEY\n"
                    : line + "\n";
  }
  broker_.reset();
  broker_ = std::make_unique<iot::testing::TestMosquitto>(with_env);
  AddDevice("p1_env", "s");
  EXPECT_EQ(TryConnect(Device("p1_env", "s")), 0);
}

TEST_F(PluginTest, BadConfigurationStopsTheBrokerWithAClearLogLine) {
  iot::testing::TempDir dir("iot-badconf");
  const auto config = dir.path() / "mosquitto.conf";
  {
    std::ofstream out(config);
    out << "listener " << iot::testing::FreePort() << " 127.0.0.1\n"
        << "allow_anonymous false\nlog_dest stdout\n"
        << (::geteuid() == 0 ? "user root\n" : "") << "plugin "
        << iot::testing::LibraryPath("libiot_auth.so").string() << "\n"
        << "plugin_opt_secret_key " << kSecretKey << "\n";
  }
  iot::testing::Process broker(
      iot::testing::Process::Options{.argv = {"mosquitto", "-c", config.string()},
                                     .env = {},
                                     .log_file = dir.path() / "log",
                                     .run_as_user = {}});
  const auto exit_code = broker.Wait(kWait);
  ASSERT_TRUE(exit_code.has_value()) << broker.Log();
  EXPECT_NE(*exit_code, 0);
  EXPECT_THAT(broker.Log(), HasSubstr("iot_auth: invalid configuration, not starting: "
                                      "plugin_opt_redis_url: required"));
}

// ---- Alink devices (README.md, Alink devices) ----

/// LinkSDK 4.x and the C SDK 3.x send this fixed timestamp.
constexpr char kLinkSdkTimestamp[] = "2524608000000";

class AlinkTest : public ProjectionTest {
 protected:
  /// An Alink device `{pk}_{dn}` in the projection (dialect `alink`).
  void AddAlinkDevice(const std::string& pk, const std::string& dn, const std::string& secret,
                      bool frozen = false) {
    AddDevice(pk + "_" + dn, secret, frozen, "alink");
  }

  /// "clientId"<cid>"deviceName"<dn>"productKey"<pk>"timestamp"<ts>: what the password signs.
  static std::string Content(const std::string& cid, const std::string& pk, const std::string& dn,
                             const std::string& timestamp) {
    return "clientId" + cid + "deviceName" + dn + "productKey" + pk +
           (timestamp.empty() ? "" : "timestamp" + timestamp);
  }

  /// As the Node SDK (alibabacloud-iot-device-sdk 1.2.8) connects: cid `{pk}&{dn}`, a client id
  /// that says hmacsha256 with a millisecond timestamp, a lower-case HMAC-SHA1 signature.
  TestClient::Options NodeSdk(const std::string& pk, const std::string& dn,
                              const std::string& secret, int protocol = 4) const {
    const std::string cid = pk + "&" + dn;
    const std::string timestamp =
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
    return TestClient::Options{
        .port = broker_->port(),
        .client_id = fmt::format("{}|securemode=3,signmethod=hmacsha256,timestamp={},"
                                 "lan=NodeJS,_v=1.2.8|",
                                 cid, timestamp),
        .username = dn + "&" + pk,
        .password = broker::AlinkSign(broker::AlinkSignMethod::kHmacSha1, secret,
                                      Content(cid, pk, dn, timestamp)),
        .protocol = protocol,
        .clean_session = false};
  }

  /// As LinkSDK 4.x connects: cid `{pk}.{dn}`, the fixed timestamp, `_ss=1,...,ext=3`, an
  /// upper-case HMAC-SHA256 signature.
  TestClient::Options LinkSdk4(const std::string& pk, const std::string& dn,
                               const std::string& secret) const {
    const std::string cid = pk + "." + dn;
    std::string password = common::HmacSha256Hex(secret, Content(cid, pk, dn, kLinkSdkTimestamp));
    for (char& c : password) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return TestClient::Options{
        .port = broker_->port(),
        .client_id = fmt::format("{}|timestamp={},_ss=1,_v=sdk-c-4.1.0,securemode=3,"
                                 "signmethod=hmacsha256,ext=3,_conn=tcp_5f3a|",
                                 cid, kLinkSdkTimestamp),
        .username = dn + "&" + pk,
        .password = password};
  }

  struct BadIdentity {
    std::string name;
    TestClient::Options options;
    std::string reason;  ///< in the refusal's log line
  };

  /// Connects the plugin refuses, each for its reason; the devices are those of
  /// RefusesEveryBadIdentityAndCountsTheRefusals.
  std::vector<BadIdentity> BadIdentities() {
    const auto good = LinkSdk4("a1Pk", "ok", "good");
    auto with = [&](const std::function<void(TestClient::Options&)>& change) {
      auto options = good;
      change(options);
      return options;
    };
    const std::string params = "|timestamp=2524608000000,securemode=3,signmethod=hmacsha256|";
    return {
        {"no '|' after the parameters",
         with([](auto& o) { o.client_id = "a1Pk.ok|timestamp=2524608000000,securemode=3"; }),
         "needs a '|' before and after"},
        {"empty cid", with([&](auto& o) { o.client_id = params; }), "empty <cid>"},
        {"unknown signmethod", with([](auto& o) {
           o.client_id = "a1Pk.ok|timestamp=2524608000000,signmethod=hmacsha512|";
         }),
         "signmethod 'hmacsha512'"},
        {"securemode=-2 (token login)",
         with([](auto& o) { o.client_id = "a1Pk.ok|securemode=-2,signmethod=hmacsha256|"; }),
         "securemode=-2 (token login after dynamic registration) is not supported"},
        {"dynamic registration", with([](auto& o) {
           o.client_id = "a1Pk.ok|securemode=2,authType=register,random=1,signmethod=hmacsha256|";
         }),
         "authType=register (dynamic registration) is not supported"},
        {"username without '&'", with([](auto& o) { o.username = "ok"; }),
         "username is not {deviceName}&{productKey}"},
        {"'/' in the deviceName", with([](auto& o) { o.username = "o/k&a1Pk"; }),
         "deviceName (before '&') must be"},
        {"'+' in the productKey", with([](auto& o) { o.username = "ok&a1+Pk"; }),
         "productKey (after '&') must be"},
        {"unknown productKey", LinkSdk4("a1Other", "ok", "good"), "unknown device"},
        {"unknown deviceName", LinkSdk4("a1Pk", "nobody", "good"), "unknown device"},
        {"wrong signature", LinkSdk4("a1Pk", "ok", "bad"), "bad password"},
        {"signature of no algorithm's length",
         with([](auto& o) { o.password = o.password->substr(0, 50); }), "bad password"},
        {"signature over another timestamp", with([](auto& o) {
           o.client_id = "a1Pk.ok|timestamp=2524608000001,securemode=3,signmethod=hmacsha256|";
         }),
         "bad password"},
        {"no password", with([](auto& o) { o.password.reset(); }), "no password"},
        {"frozen", LinkSdk4("a1Pk", "frozen", "good"), "device is frozen"},
        {"deleted", LinkSdk4("a1Pk", "gone", "good"), "unknown device"},
        {"an IoTDA device in the Alink form", LinkSdk4("p1", "huawei", "good"),
         "device is not of the alink dialect"},
        {"an Alink device in the IoTDA form", Device("a1Pk_ok", "good"),
         "device is of the alink dialect"},
        {"the other reading of an ambiguous device id", LinkSdk4("a1Pk_x", "y", "good"),
         "device 'a1Pk_x_y' is productKey 'a1Pk', deviceName 'x_y'"},
    };
  }

  /// Adds up the connect-guard lines of `text` (each line once): refusals, the Alink-form ones.
  static void CountGuardLines(const std::string& text, const std::regex& guard, int& refused,
                              int& alink) {
    std::set<std::string> lines;
    refused = 0;
    alink = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), guard);
         it != std::sregex_iterator(); ++it) {
      if (lines.insert(it->str()).second) {
        refused += std::stoi((*it)[2].str());
        alink += std::stoi((*it)[3].str());
      }
    }
  }

  /// One of the down-results for `device_id` the gateway got has `status`.
  static bool AnyDownResult(TestClient& gateway, const std::string& device_id,
                            const std::string& status) {
    for (const auto& m : gateway.messages_on("$iot/down-result/" + device_id)) {
      if (Json::parse(m.payload)["status"] == status) {
        return true;
      }
    }
    return false;
  }

  /// Downlink to the disconnected a1Pk_link4 is refused and its down-result says offline.
  static void ExpectOfflineReported(TestClient& gateway) {
    EXPECT_TRUE(WaitUntil(
        [&] {
          return gateway.Publish("$iot/down/a1Pk_link4/alink/sys/a1Pk/link4/rrpc/request/9", "{}",
                                 1) == kV5NotAuthorized;
        },
        kWait));
    EXPECT_TRUE(WaitUntil(
        [&] {
          const auto results = gateway.messages_on("$iot/down-result/a1Pk_link4");
          return Json::parse(results.back().payload)["status"] == "offline";
        },
        kWait));
  }

  /// Where the plugin delivers the device's uplink on `topic` (an Alibaba topic).
  static std::string AlinkUp(const std::string& device_id, const std::string& topic) {
    return fmt::format("iot/up/{}/{}/alink{}", broker::UplinkPartition(device_id, kPartitions),
                       device_id, topic);
  }
};

TEST_F(AlinkTest, NodeSdkDeviceConnectsAndItsUplinkReachesTheGatewaysWithAMessageId) {
  AddAlinkDevice("a1Pk", "dev01", "node-secret");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/alink/#", 1), 1);
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);
  ASSERT_EQ(gateway->Subscribe("iot/presence/+/+", 1), 1);

  const auto options = NodeSdk("a1Pk", "dev01", "node-secret");
  auto device = Connect(options);
  ASSERT_TRUE(device->connected());
  const std::string post =
      R"({"id":"1|exp-topic|/sys/a1Pk/dev01/thing/event/property/post_reply","version":"1.0",)"
      R"("params":{"temperature":21.5},"method":"thing.event.property.post"})";
  EXPECT_EQ(device->Publish("/sys/a1Pk/dev01/thing/event/property/post", post, 1), 0);
  const std::string up = AlinkUp("a1Pk_dev01", "/sys/a1Pk/dev01/thing/event/property/post");
  ASSERT_TRUE(gateway->WaitForMessage(
      [&](const ReceivedMessage& m) { return m.topic == up && m.payload == post; }, kWait))
      << BrokerLog();
  const auto relayed = gateway->messages_on(up);
  EXPECT_FALSE(relayed[0].Property(kMessageId).empty());
  EXPECT_FALSE(relayed[0].Property("iot-received-at").empty());
  EXPECT_EQ(relayed[0].qos, 1);

  // Every up-topic of the dialect, LinkSDK's `?_rid=` stripped; each with an id of its own.
  const std::vector<std::pair<std::string, std::string>> topics = {
      {"/sys/a1Pk/dev01/thing/event/alarm/post?_rid=1700000000001",
       "/sys/a1Pk/dev01/thing/event/alarm/post"},
      {"/sys/a1Pk/dev01/thing/event/property/batch/post",
       "/sys/a1Pk/dev01/thing/event/property/batch/post"},
      {"/sys/a1Pk/dev01/thing/service/property/set_reply",
       "/sys/a1Pk/dev01/thing/service/property/set_reply"},
      {"/sys/a1Pk/dev01/rrpc/response/42", "/sys/a1Pk/dev01/rrpc/response/42"},
      {"/a1Pk/dev01/user/foo/bar", "/a1Pk/dev01/user/foo/bar"},
      {"/shadow/update/a1Pk/dev01", "/shadow/update/a1Pk/dev01"},
      {"/ext/ntp/a1Pk/dev01/request", "/ext/ntp/a1Pk/dev01/request"},
      {"/ext/rrpc/7/sys/a1Pk/dev01/thing/service/reboot",
       "/ext/rrpc/7/sys/a1Pk/dev01/thing/service/reboot"},
  };
  for (const auto& [topic, alibaba] : topics) {
    EXPECT_EQ(device->Publish(topic, "p:" + alibaba, 1), 0) << topic;
  }
  ASSERT_TRUE(gateway->WaitForMessage(
      [&](const ReceivedMessage& m) { return m.payload == "p:" + topics.back().second; }, kWait));
  std::set<std::string> ids = {relayed[0].Property(kMessageId)};
  for (const auto& [topic, alibaba] : topics) {
    const auto got = gateway->messages_on(AlinkUp("a1Pk_dev01", alibaba));
    ASSERT_EQ(got.size(), 1U) << topic;
    EXPECT_EQ(got[0].payload, "p:" + alibaba);
    ids.insert(got[0].Property(kMessageId));
  }
  EXPECT_EQ(ids.size(), topics.size() + 1);

  // Presence: the Alink client id, the device's product (productKey) and node (deviceName).
  device->Disconnect();
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "a1Pk_dev01").size() == 2; }, kWait));
  const auto events = Presence(*gateway, "a1Pk_dev01");
  EXPECT_EQ(events[0]["event"], "connected");
  EXPECT_EQ(events[1]["event"], "disconnected");
  for (const auto& event : events) {
    EXPECT_EQ(event["client_id"], options.client_id);
    EXPECT_EQ(event["product_id"], "a1Pk");
    EXPECT_EQ(event["node_id"], "dev01");
  }
  EXPECT_EQ(
      gateway->messages_on(broker::PartitionedPresenceTopic("a1Pk_dev01", kPartitions)).size(), 2U);
}

TEST_F(AlinkTest, LinkSdk4DeviceSignsUpperCaseWithTheFixedTimestampAndGetsDownlinkUnasked) {
  AddAlinkDevice("a1Pk", "link4", "link-secret");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/down-result/+", 1), 1);
  ASSERT_EQ(gateway->Subscribe("iot/up/+/+/alink/#", 1), 1);
  auto device = Connect(LinkSdk4("a1Pk", "link4", "link-secret"));  // never subscribes

  // Property set, RRPC (both forms), shadow control, NTP answer, custom topic: each delivered
  // as the Alibaba topic, with the payload and QoS of the internal message.
  const std::vector<std::string> down = {"/sys/a1Pk/link4/thing/service/property/set",
                                         "/sys/a1Pk/link4/rrpc/request/1001",
                                         "/ext/rrpc/1002/sys/a1Pk/link4/thing/service/reboot",
                                         "/shadow/get/a1Pk/link4",
                                         "/ext/ntp/a1Pk/link4/response",
                                         "/a1Pk/link4/user/get"};
  for (const auto& topic : down) {
    EXPECT_EQ(gateway->Publish("$iot/down/a1Pk_link4/alink" + topic, "d:" + topic, 1),
              kV5NoMatchingSubscribers)
        << topic;
  }
  ASSERT_TRUE(device->WaitForCount(down.size(), kWait)) << BrokerLog();
  const auto received = device->messages();
  ASSERT_EQ(received.size(), down.size());
  for (size_t i = 0; i < down.size(); ++i) {
    EXPECT_EQ(received[i].topic, down[i]);
    EXPECT_EQ(received[i].payload, "d:" + down[i]);
    EXPECT_EQ(received[i].qos, 1);
  }
  ASSERT_TRUE(gateway->WaitForCount(down.size(), kWait));
  const auto result = Json::parse(gateway->messages_on("$iot/down-result/a1Pk_link4")[0].payload);
  EXPECT_EQ(result["status"], "relayed");
  EXPECT_EQ(result["topic"], down[0]);

  // It answers the RRPC request with its uplink.
  EXPECT_EQ(device->Publish("/sys/a1Pk/link4/rrpc/response/1001?_rid=3", R"({"code":200})", 0), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) {
        return m.topic == AlinkUp("a1Pk_link4", "/sys/a1Pk/link4/rrpc/response/1001");
      },
      kWait));

  // Not delivered: another device's topic, an up-topic, an IoTDA topic for this Alink device.
  AddAlinkDevice("a1Pk", "other", "s");
  auto other = Connect(LinkSdk4("a1Pk", "other", "s"));
  for (const std::string& topic :
       {std::string("$iot/down/a1Pk_link4/alink/sys/a1Pk/other/thing/service/property/set"),
        std::string("$iot/down/a1Pk_other/alink/sys/a1Pk/link4/thing/service/property/set"),
        std::string("$iot/down/a1Pk_link4/alink/shadow/update/a1Pk/link4"),
        std::string("$iot/down/a1Pk_link4/alink")}) {
    EXPECT_EQ(gateway->Publish(topic, "forged", 1), kV5NotAuthorized) << topic;
  }
  EXPECT_EQ(gateway->Publish("$iot/down/a1Pk_link4/sys/messages/down", "iotda", 1),
            kV5NotAuthorized);
  ASSERT_TRUE(WaitUntil([&] { return AnyDownResult(*gateway, "a1Pk_link4", "error"); }, kWait));
  EXPECT_THAT(BrokerLog(), HasSubstr("not a topic of device 'a1Pk_link4' (alink dialect)"));
  // A last good one: once it is in, any of the refused ones would be too.
  EXPECT_LT(gateway->Publish("$iot/down/a1Pk_link4/alink/a1Pk/link4/user/last", "last", 1), 0x80);
  ASSERT_TRUE(
      device->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "last"; }, kWait));
  EXPECT_EQ(device->messages().size(), down.size() + 1);
  EXPECT_TRUE(other->messages().empty());

  // Offline: the gateway is told.
  device->Disconnect();
  ExpectOfflineReported(*gateway);
}

TEST_F(AlinkTest, SubscribedNodeSdkDeviceGetsEachDownlinkOnce) {
  AddAlinkDevice("a1Pk", "subbed", "s");
  auto gateway = Gateway();
  auto device = Connect(NodeSdk("a1Pk", "subbed", "s"));
  // What the Node SDK subscribes to at connect (and /ext/session/..., refused: not ours).
  for (const char* filter :
       {"/sys/a1Pk/subbed/thing/event/property/post_reply",
        "/sys/a1Pk/subbed/thing/service/property/set", "/sys/a1Pk/subbed/thing/event/+/post_reply",
        "/shadow/get/a1Pk/subbed", "/sys/a1Pk/subbed/rrpc/request/+", "/sys/a1Pk/subbed/#"}) {
    EXPECT_EQ(device->Subscribe(filter, 1), 1) << filter;
  }
  EXPECT_EQ(device->Subscribe("/ext/session/a1Pk/subbed/combine/login_reply", 1), 0x80);
  for (int i = 1; i <= 3; ++i) {
    EXPECT_LT(gateway->Publish(
                  fmt::format("$iot/down/a1Pk_subbed/alink/sys/a1Pk/subbed/rrpc/request/{}", i),
                  fmt::format("rrpc-{}", i), 1),
              0x80);
  }
  EXPECT_LT(gateway->Publish("$iot/down/a1Pk_subbed/alink/shadow/get/a1Pk/subbed", "last", 1),
            0x80);
  ASSERT_TRUE(
      device->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "last"; }, kWait));
  EXPECT_THAT(Payloads(*device), ::testing::ElementsAre("rrpc-1", "rrpc-2", "rrpc-3", "last"));
}

TEST_F(AlinkTest, DeviceCannotUseAnotherDevicesTopicsOrInternalTopics) {
  AddAlinkDevice("a1Pk", "a", "sa");
  AddAlinkDevice("a1Pk", "b", "sb");
  AddDevice("p1_h", "sh");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/#", 1), 1);
  auto a = Connect(NodeSdk("a1Pk", "a", "sa", /*protocol=*/5));
  auto b = Connect(LinkSdk4("a1Pk", "b", "sb"));

  for (const std::string& topic : {
           std::string("/sys/a1Pk/b/thing/event/property/post"),  // B's
           std::string("/a1Pk/b/user/foo"),
           std::string("/shadow/update/a1Pk/b"),
           std::string("/ext/ntp/a1Pk/b/request"),
           std::string("/ext/rrpc/1/sys/a1Pk/b/thing/service/x"),
           std::string("/sys/a1Pk/a/rrpc/request/1"),  // its own down-topics
           std::string("/shadow/get/a1Pk/a"),
           std::string("/sys/a1Pk/a/other"),
           std::string("$oc/devices/a1Pk_a/sys/properties/report"),  // the IoTDA form
           std::string("$oc/devices/p1_h/sys/properties/report"),
           std::string("$iot/down/a1Pk_b/alink/sys/a1Pk/b/thing/service/property/set"),
           std::string("$iot/presence/a1Pk_a"),
           std::string("$iot/config/uplink_partitions"),
           AlinkUp("a1Pk_a", "/sys/a1Pk/a/thing/event/property/post"),
           AlinkUp("a1Pk_b", "/sys/a1Pk/b/thing/event/property/post"),
       }) {
    EXPECT_EQ(a->Publish(topic, "forged", 1), kV5NotAuthorized) << topic;
  }
  for (const char* filter :
       {"/sys/a1Pk/b/#", "/sys/a1Pk/+/thing/#", "/sys/+/a/#", "/sys/#", "#", "/#", "/a1Pk/b/user/#",
        "/a1Pk/+/user/#", "/shadow/get/a1Pk/+", "/shadow/get/a1Pk/b", "/ext/ntp/a1Pk/b/response",
        "/ext/rrpc/+/sys/a1Pk/b/#", "/ext/rrpc/#", "$oc/devices/a1Pk_a/#", "$iot/#", "iot/up/#",
        "iot/presence/+/+", "$share/g/sys/a1Pk/a/#", "$share/g/iot/up/#"}) {
    EXPECT_EQ(a->Subscribe(filter, 1), kV5NotAuthorized) << filter;
  }
  // Its own work; the marker arriving means the forged ones, sent before, were dropped.
  EXPECT_EQ(a->Subscribe("/sys/a1Pk/a/#", 1), 1);
  EXPECT_EQ(a->Publish("/a1Pk/a/user/marker", "marker", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "marker"; }, kWait));
  for (const auto& m : gateway->messages()) {
    EXPECT_NE(m.payload, "forged") << m.topic;
  }
  // B's uplink reaches the gateway, not A (nor does A see its own: it goes to iot/up/...).
  EXPECT_EQ(b->Publish("/sys/a1Pk/b/thing/event/property/post", "from-b", 1), 0);
  EXPECT_EQ(a->Publish("/sys/a1Pk/a/thing/event/property/post", "from-a", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "from-b"; }, kWait));
  ASSERT_TRUE(gateway->WaitForMessage(
      [](const ReceivedMessage& m) { return m.payload == "from-a"; }, kWait));
  EXPECT_TRUE(a->messages().empty());
  EXPECT_TRUE(b->messages().empty());
}

TEST_F(AlinkTest, DevicePublishesAreNeverRetained) {
  AddAlinkDevice("a1Pk", "ret", "s");
  auto device = Connect(NodeSdk("a1Pk", "ret", "s", /*protocol=*/5));
  for (const char* topic : {"/sys/a1Pk/ret/thing/event/property/post", "/a1Pk/ret/user/t1",
                            "/shadow/update/a1Pk/ret"}) {
    EXPECT_LT(device->Publish(topic, "retained", 1, kWait, {}, /*retain=*/true), 0x80) << topic;
  }
  // A gateway subscribing afterwards gets the marker only (retained messages come first).
  auto later = Gateway("gateway-later");
  ASSERT_EQ(later->Subscribe("iot/up/#", 1), 1);
  EXPECT_LT(device->Publish("/a1Pk/ret/user/t1", "marker", 1), 0x80);
  ASSERT_TRUE(
      later->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "marker"; }, kWait));
  for (const auto& m : later->messages()) {
    EXPECT_EQ(m.payload, "marker") << m.topic;
  }
}

TEST_F(AlinkTest, AWillOnTheDevicesOwnUpTopicIsRelayedAndOneElsewhereGoesNowhere) {
  AddAlinkDevice("a1Pk", "will", "s");
  AddAlinkDevice("a1Pk", "bad", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("iot/up/#", 1), 1);
  ASSERT_EQ(gateway->Subscribe("/sys/#", 1), 1);
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);
  auto options = LinkSdk4("a1Pk", "will", "s");
  options.will_topic = "/sys/a1Pk/will/thing/event/power_lost/post";
  options.will_payload = R"({"id":"1","params":{}})";
  Connect(options)->Drop();
  const std::string up = AlinkUp("a1Pk_will", "/sys/a1Pk/will/thing/event/power_lost/post");
  ASSERT_TRUE(
      gateway->WaitForMessage([&](const ReceivedMessage& m) { return m.topic == up; }, kWait))
      << BrokerLog();
  EXPECT_EQ(gateway->messages_on(up)[0].payload, options.will_payload);
  EXPECT_FALSE(gateway->messages_on(up)[0].Property(kMessageId).empty());
  EXPECT_TRUE(gateway->messages_on(options.will_topic).empty());  // not parked there

  // On another device's topic: nowhere, neither there nor relayed.
  auto bad = LinkSdk4("a1Pk", "bad", "s");
  bad.will_topic = "/sys/a1Pk/will/thing/event/power_lost/post";
  bad.will_payload = "forged";
  Connect(bad)->Drop();
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "a1Pk_bad").size() == 2; }, kWait));
  auto marker = Connect(LinkSdk4("a1Pk", "will", "s"));
  EXPECT_EQ(marker->Publish("/a1Pk/will/user/marker", "after", 1), 0);
  ASSERT_TRUE(gateway->WaitForMessage([](const ReceivedMessage& m) { return m.payload == "after"; },
                                      kWait));
  for (const auto& m : gateway->messages()) {
    EXPECT_NE(m.payload, "forged") << m.topic;
  }
}

TEST_F(AlinkTest, FrozenDeletedOrReplacedConnectionsAreClosedWithTheirPresence) {
  AddAlinkDevice("a1Pk", "fz", "s");
  AddAlinkDevice("a1Pk", "del", "s");
  auto gateway = Gateway();
  ASSERT_EQ(gateway->Subscribe("$iot/presence/+", 1), 1);

  // A second connection (another client id) replaces the first.
  const auto first_options = NodeSdk("a1Pk", "fz", "s");
  auto first = Connect(first_options);
  const auto second_options = LinkSdk4("a1Pk", "fz", "s");
  auto second = Connect(second_options);
  EXPECT_TRUE(first->WaitDisconnected(kWait));

  Redis({"HSET", "tm:dev:a1Pk_fz", "frozen", "1", "version", "2"});
  NotifyChange("a1Pk_fz", "upsert", true);
  EXPECT_TRUE(second->WaitDisconnected(kKickDeadline));
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "a1Pk_fz").size() == 4; }, kWait));
  std::vector<std::string> seen;
  for (const auto& e : Presence(*gateway, "a1Pk_fz")) {
    seen.push_back(fmt::format("{} {} {}", e["event"].get<std::string>(),
                               e["client_id"].get<std::string>(), e["reason"].get<std::string>()));
  }
  EXPECT_THAT(seen, ::testing::ElementsAre("connected " + first_options.client_id + " connect",
                                           "disconnected " + first_options.client_id + " replaced",
                                           "connected " + second_options.client_id + " connect",
                                           "disconnected " + second_options.client_id + " frozen"));
  EXPECT_EQ(TryConnect(LinkSdk4("a1Pk", "fz", "s")), kV311NotAuthorized);

  auto deleted = Connect(NodeSdk("a1Pk", "del", "s"));
  Redis({"DEL", "tm:dev:a1Pk_del"});
  NotifyChange("a1Pk_del", "delete", false);
  EXPECT_TRUE(deleted->WaitDisconnected(kKickDeadline));
  ASSERT_TRUE(WaitUntil([&] { return Presence(*gateway, "a1Pk_del").size() == 2; }, kWait));
  EXPECT_EQ(Presence(*gateway, "a1Pk_del")[1]["reason"], "deleted");
  EXPECT_EQ(TryConnect(NodeSdk("a1Pk", "del", "s")), kV311NotAuthorized);
}

TEST_F(AlinkTest, RefusesEveryBadIdentityAndCountsTheRefusals) {
  // Connect-guard lines at least 2 s apart: no two of them have the same time stamp (the log
  // has each line twice, from stdout and stderr: those are told apart by it).
  StartBroker("plugin_opt_stats_interval_ms 2000");
  WaitForLoad();
  AddAlinkDevice("a1Pk", "ok", "good");
  AddAlinkDevice("a1Pk", "frozen", "good", /*frozen=*/true);
  AddAlinkDevice("a1Pk", "gone", "good");
  Redis({"DEL", "tm:dev:a1Pk_gone"});
  AddDevice("p1_huawei", "good");  // an IoTDA device (no dialect field)
  // `{pk}_{dn}` is ambiguous: product "a1Pk", device "x_y" is also "a1Pk_x" + "y".
  Redis({"HSET", "tm:dev:a1Pk_x_y", "tenant_id", "t1", "product_id", "a1Pk", "node_id", "x_y",
         "frozen", "0", "secret",
         common::SecretBox::FromKeyText(kSecretKey)->Seal("good", "a1Pk_x_y"), "dialect", "alink",
         "version", "1"});

  const auto good = LinkSdk4("a1Pk", "ok", "good");
  const std::vector<BadIdentity> cases = BadIdentities();
  int alink_form = 0;
  for (const auto& c : cases) {
    EXPECT_EQ(TryConnect(c.options), kV311NotAuthorized) << c.name;
    alink_form += broker::IsAlinkClientId(c.options.client_id) ? 1 : 0;
    // Below the 20 refusal lines a second that are logged one by one.
    std::this_thread::sleep_for(60ms);
  }
  EXPECT_EQ(TryConnect(NodeSdk("a1Pk", "ok", "good", 5)), 0);
  EXPECT_EQ(TryConnect(good), 0);
  EXPECT_EQ(TryConnect(LinkSdk4("a1Pk", "x_y", "good")), 0);
  const std::string log = BrokerLog();
  for (const auto& c : cases) {
    EXPECT_THAT(log, HasSubstr(fmt::format("refused client '{}'", c.options.client_id))) << c.name;
    EXPECT_THAT(log, HasSubstr(c.reason)) << c.name;
  }
  EXPECT_THAT(log, ::testing::Not(HasSubstr("good")));  // no secret in the log
  // Counted: the connect-guard lines add up to every refusal, the Alink-form ones apart.
  const std::regex guard(R"((\d{10}): iot_auth: connect guard, last \d+ s: (\d+) connects refused )"
                         R"(\((\d+) in the Alink form)");
  int refused = 0;
  int alink = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        CountGuardLines(BrokerLog(), guard, refused, alink);
        return refused == static_cast<int>(cases.size()) && alink == alink_form;
      },
      kWait))
      << refused << " refused, " << alink << " in the Alink form; log:\n"
      << BrokerLog();
}

TEST_F(AlinkTest, ConnectFloodsOfAlinkIdsAreBoundedLikeIotdaOnes) {
  AddAlinkDevice("a1Pk", "held", "s");
  StartBroker(
      "plugin_opt_connect_rate_per_address 1\nplugin_opt_connect_burst_per_address 5\n"
      "plugin_opt_unknown_cache_ttl_ms 60000");
  WaitForLoad();
  Redis({"CONFIG", "RESETSTAT"});
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(TryConnect(LinkSdk4("a1Pk", fmt::format("x{}", i), "s")), kV311NotAuthorized);
  }
  // The burst of 5, then one a second: the others were refused without asking Redis.
  const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);
  const int64_t lookups = HgetallCalls();
  EXPECT_GE(lookups, 5);
  EXPECT_LE(lookups, 5 + static_cast<int64_t>(elapsed.count()) + 1);
  EXPECT_THAT(BrokerLog(), HasSubstr("over the limit of 1 connects/s from 127.0.0.1"));
  // A device held in memory still connects from that address.
  EXPECT_EQ(TryConnect(LinkSdk4("a1Pk", "held", "s")), 0);
  // An unknown id looked up once is answered from memory (from another address: a fresh bucket).
  auto again = LinkSdk4("a1Pk", "x0", "s");
  again.bind_address = "127.0.0.2";
  Redis({"CONFIG", "RESETSTAT"});
  EXPECT_EQ(TryConnect(again), kV311NotAuthorized);
  EXPECT_EQ(HgetallCalls(), 0);
}

}  // namespace
}  // namespace iot::broker_test
