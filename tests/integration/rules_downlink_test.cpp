// rule-forwarding's republish to a device's down topic, end to end: real thing-model (devices of
// two tenants), device-gateway carrying the downlink, Mosquitto with the iot_auth plugin, signed
// devices, rule-forwarding on PostgreSQL and Redis. Records enter through InternalIngest as the
// gateway sends them.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "iot/testing/device.h"
#include "iot/testing/platform.h"
#include "iot/testing/platform_fixture.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace rf = iot::rule_forwarding::v1;
namespace tm = iot::thing_model::v1;
using iot::testing::WaitUntil;
using nlohmann::json;
using std::chrono::seconds;

const std::string kSecretKey(64, 'e');
const std::string kAdminKey = "rules-downlink-admin-key-0123456789";
const std::string kServiceKey = "rules-downlink-service-key-0123456789";
const std::string kPassword = "service-password-for-rules-downlink";
constexpr int kMaxAttempts = 6;

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key) {
  return iot::testing::BearerContext(key);
}

using AddedDevice = iot::testing::RegisteredDevice;

class RulesDownlinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    platform_ = std::make_unique<iot::testing::Platform>(
        iot::testing::PlatformOptions{.secret_key = kSecretKey,
                                      .admin_key = kAdminKey,
                                      .service_key = kServiceKey,
                                      .service_account = "svc",
                                      .service_password = kPassword});
    tm::CreateTenantRequest tenant;
    tenant.set_tenant_id("other");
    tenant.set_name("other");
    tenant.set_create_admin_key(true);
    tm::CreateTenantResponse created_tenant;
    ASSERT_TRUE(tm::Tenants::NewStub(platform_->thing_model_channel())
                    ->CreateTenant(Ctx(kAdminKey).get(), tenant, &created_tenant)
                    .ok());
    *other_key_ = created_tenant.admin_key_secret();
    // Product ids are global: the other tenant's copy of the model gets its own.
    json model =
        json::parse(iot::testing::ReadTextFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    for (const auto& [key, product_id] : {std::pair{kAdminKey, std::string("smartmeter01")},
                                          std::pair{*other_key_, std::string("smartmeter02")}}) {
      model["product_id"] = product_id;
      platform_->CreateProduct(model.dump(), key);
    }

    gateway_ = &platform_->StartGateway({.client_id = "gw-rules-downlink"});
    rules_ = &platform_->StartService(
        {.binary = "rule-forwarding",
         .env_prefix = "IOT_RULE_FORWARDING",
         .env = {{"IOT_MQTT_URL", platform_->ServiceMqttUrl()},
                 {"IOT_RULE_FORWARDING_MQTT_CLIENT_ID", "rule-forwarding-downlink"},
                 {"IOT_DEVICE_GATEWAY_ADDR", gateway_->address()},
                 {"IOT_SECRET_KEY", kSecretKey},
                 {"IOT_RULE_FORWARDING_MAX_ATTEMPTS", std::to_string(kMaxAttempts)},
                 {"IOT_RULE_FORWARDING_RETRY_INITIAL", "50ms"},
                 {"IOT_RULE_FORWARDING_RETRY_MAX", "200ms"}},
         .args = {}});
  }

  static void TearDownTestSuite() { platform_.reset(); }

  static AddedDevice AddDevice(const std::string& key,
                               const std::string& product_id = "smartmeter01") {
    return platform_->AddDevice(product_id, key);
  }

  /// A rule of the default tenant for records of `source`, republishing `t` to `topic`.
  static rf::Rule CreateRule(const std::string& source, const std::string& topic) {
    rf::CreateRuleRequest request;
    request.set_name("down");
    request.set_resource("device.property");
    request.set_device_id(source);
    request.set_sql("SELECT notify_data.body.services[0].properties.t AS t");
    auto* action = request.add_actions();
    action->set_type("republish");
    action->set_config_json(json{{"topic", topic}}.dump());
    rf::Rule rule;
    const grpc::Status s = Rules()->CreateRule(Ctx(kAdminKey).get(), request, &rule);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return rule;
  }

  /// Calls InternalIngest as the gateway does: a property report of `device` (default tenant).
  static grpc::Status Ingest(const std::string& device, const std::string& message_id, int t) {
    rf::IngestRequest request;
    auto* r = request.add_records();
    r->set_message_id(message_id);
    r->mutable_device()->set_tenant_id("default");
    r->mutable_device()->set_device_id(device);
    r->mutable_device()->set_product_id("smartmeter01");
    r->mutable_device()->set_node_id("n1");
    r->set_resource("device.property");
    r->set_event("report");
    r->set_topic("$oc/devices/" + device + "/sys/properties/report");
    r->set_event_time_unix_ms(1'790'000'000'000);
    r->set_envelope_json(
        json{{"resource", "device.property"},
             {"event", "report"},
             {"notify_data",
              {{"header", {{"device_id", device}, {"tenant_id", "default"}}},
               {"body", {{"services", {{{"service_id", "meter"}, {"properties", {{"t", t}}}}}}}}}}}
            .dump());
    iot::device_gateway::v1::IngestAck ack;
    return rf::InternalIngest::NewStub(
               grpc::CreateChannel(rules_->address(), grpc::InsecureChannelCredentials()))
        ->Ingest(Ctx(kServiceKey).get(), request, &ack);
  }

  /// The rule's one dead letter, waiting for it.
  static std::optional<rf::DeadLetter> DeadLetter(const rf::Rule& rule) {
    rf::ListDeadLettersRequest list;
    list.set_rule_id(rule.rule_id());
    rf::ListDeadLettersResponse letters;
    if (!WaitUntil(
            [&] {
              letters.Clear();
              return Rules()->ListDeadLetters(Ctx(kAdminKey).get(), list, &letters).ok() &&
                     letters.dead_letters_size() > 0;
            },
            seconds(20))) {
      return std::nullopt;
    }
    return letters.dead_letters(0);
  }

  static std::unique_ptr<rf::Rules::Stub> Rules() {
    return rf::Rules::NewStub(
        grpc::CreateChannel(rules_->address(), grpc::InsecureChannelCredentials()));
  }

  static std::string Diagnostics() {
    return gateway_->process().Log() + "\n" + rules_->process().Log();
  }

  static inline std::unique_ptr<iot::testing::Platform> platform_;
  static inline iot::testing::ServiceProcess* gateway_ = nullptr;
  static inline iot::testing::ServiceProcess* rules_ = nullptr;
  static inline std::string* other_key_ = new std::string();
};

TEST_F(RulesDownlinkTest, RuleRepublishesToAConnectedDevicesDownTopic) {
  const AddedDevice source = AddDevice(kAdminKey);
  const AddedDevice target = AddDevice(kAdminKey);
  iot::testing::SignedDevice device(platform_->broker().Url(), target.id, target.secret);
  ASSERT_TRUE(device.Connect());
  const rf::Rule rule = CreateRule(source.id, "$oc/devices/" + target.id + "/sys/messages/down");
  ASSERT_TRUE(Ingest(source.id, "m-1", 42).ok());
  // Delivered at once, or retried while the gateway has not yet seen the device connect.
  const auto received = device.Await("messages/down", 0, seconds(20));
  ASSERT_TRUE(received.has_value()) << Diagnostics();
  EXPECT_EQ(received->topic, "$oc/devices/" + target.id + "/sys/messages/down");
  EXPECT_EQ(json::parse(received->payload), (json{{"t", 42}}));
}

TEST_F(RulesDownlinkTest, AnotherTenantsDeviceIsADeadLetterAtOnceAndNeverReceivesIt) {
  const AddedDevice source = AddDevice(kAdminKey);
  const AddedDevice theirs = AddDevice(*other_key_, "smartmeter02");
  iot::testing::SignedDevice device(platform_->broker().Url(), theirs.id, theirs.secret);
  ASSERT_TRUE(device.Connect());
  const rf::Rule rule = CreateRule(source.id, "$oc/devices/" + theirs.id + "/sys/messages/down");
  ASSERT_TRUE(Ingest(source.id, "m-2", 7).ok());
  const auto letter = DeadLetter(rule);
  ASSERT_TRUE(letter.has_value()) << Diagnostics();
  EXPECT_EQ(letter->attempts(), 1) << "not retried";
  EXPECT_NE(letter->error().find("not a device of the rule's tenant"), std::string::npos)
      << letter->error();
  EXPECT_TRUE(device.Received("messages/down").empty());
}

TEST_F(RulesDownlinkTest, AnOfflineDeviceIsRetriedThenADeadLetter) {
  const AddedDevice source = AddDevice(kAdminKey);
  const AddedDevice offline = AddDevice(kAdminKey);
  const rf::Rule rule = CreateRule(source.id, "$oc/devices/" + offline.id + "/user/alerts/high");
  ASSERT_TRUE(Ingest(source.id, "m-3", 9).ok());
  const auto letter = DeadLetter(rule);
  ASSERT_TRUE(letter.has_value()) << Diagnostics();
  EXPECT_EQ(letter->attempts(), kMaxAttempts);
  EXPECT_NE(letter->error().find("offline"), std::string::npos) << letter->error();
}

TEST_F(RulesDownlinkTest, OtherPlatformTopicsAreRefusedAtCreation) {
  rf::CreateRuleRequest request;
  request.set_name("bad");
  request.set_resource("device.property");
  request.set_sql("SELECT *");
  auto* action = request.add_actions();
  action->set_type("republish");
  action->set_config_json(R"({"topic":"$oc/devices/x/sys/properties/report"})");
  rf::Rule rule;
  const grpc::Status s = Rules()->CreateRule(Ctx(kAdminKey).get(), request, &rule);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("actions[0].config.topic"), std::string::npos)
      << s.error_message();
}

}  // namespace
}  // namespace iot
