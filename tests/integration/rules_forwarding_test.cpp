// rule-forwarding end to end: the real service (two replicas), thing-model for API keys,
// PostgreSQL, Redis, Mosquitto and a local HTTP server. Records enter through InternalIngest as
// the device-gateway sends them; rules route them to republish, postgres and webhook actions.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <thread>

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/common/mqtt.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "iot/testing/http.h"
#include "iot/testing/http_sink.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace rf = iot::rule_forwarding::v1;
namespace tm = iot::thing_model::v1;
using iot::testing::HttpSink;
using iot::testing::WaitUntil;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kSecretKey(64, 'd');
const std::string kAdminKey = "rules-test-admin-key-0123456789";
const std::string kServiceKey = "rules-test-service-key-0123456789";

/// Every message the broker delivers on `#`, by topic.
class Subscriber {
 public:
  explicit Subscriber(const std::string& url) {
    client_ = *common::MqttClient::Create({.url = url, .client_id = "rules-test-subscriber"});
    client_->SetMessageHandler([this](const common::MqttMessage& m) {
      std::lock_guard lock(mu_);
      messages_[m.topic].push_back(m.payload);
    });
    EXPECT_TRUE(client_->Subscribe("#", 1).ok());
    EXPECT_TRUE(client_->Start().ok());
    EXPECT_TRUE(client_->WaitSubscribed(seconds(10)));
  }
  // The client's thread writes messages_: stop it before the members it uses go.
  ~Subscriber() { client_->Stop(); }
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  std::vector<std::string> On(const std::string& topic) {
    std::lock_guard lock(mu_);
    return messages_[topic];
  }
  bool WaitFor(const std::string& topic, size_t n) {
    return WaitUntil([&] { return On(topic).size() >= n; }, seconds(10));
  }

 private:
  std::unique_ptr<common::MqttClient> client_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::string>> messages_;
};

std::string Envelope(const std::string& tenant, const std::string& device, double temperature) {
  return nlohmann::json{
      {"resource", "device.property"},
      {"event", "report"},
      {"event_time", "20261126T200000Z"},
      {"notify_data",
       {{"header",
         {{"device_id", device},
          {"product_id", "meter"},
          {"node_id", "n1"},
          {"tenant_id", tenant}}},
        {"body",
         {{"services",
           {{{"service_id", "env"}, {"properties", {{"temperature", temperature}}}}}}}}}}}
      .dump();
}

struct CommandResult {
  int code = -1;
  std::string output;  // stdout and stderr
};

/// Runs iotctl against replica `address` with `key`.
CommandResult Iotctl(const std::string& address, const std::string& key,
                     const std::vector<std::string>& args) {
  static iot::testing::TempDir dir("iot-rules-iotctl");
  static int runs = 0;
  std::vector<std::string> argv = {iot::testing::ExecutablePath("iotctl").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto log = dir.path() / fmt::format("iotctl-{}.log", ++runs);
  iot::testing::Process process(
      {.argv = argv,
       .env = {{"IOTCTL_ADDR", address}, {"IOTCTL_API_KEY", key}, {"IOTCTL_API_KEY_FILE", ""}},
       .log_file = log,
       .run_as_user = {}});
  CommandResult result;
  result.code = process.Wait(seconds(60)).value_or(-1);
  std::ifstream in(log);
  result.output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return result;
}

class RulesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new iot::testing::TestRedis();
    broker_ = new iot::testing::TestMosquitto();
    thing_model_ = new iot::testing::ThingModelProcess({.redis_url = redis_->Url(),
                                                        .secret_key = kSecretKey,
                                                        .admin_key = kAdminKey,
                                                        .service_key = kServiceKey,
                                                        .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    *pg_url_ = iot::testing::CreateTestDatabase();
    for (int i = 0; i < 2; ++i) {
      replicas_[i] = new iot::testing::ServiceProcess(ReplicaOptions(i, 3));
      ASSERT_TRUE(replicas_[i]->WaitServing()) << replicas_[i]->process().Log();
    }
    subscriber_ = new Subscriber(broker_->Url());

    // A second tenant with its own admin key.
    auto channel = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
    auto tenants = tm::Tenants::NewStub(channel);
    grpc::ClientContext ctx;
    common::SetBearer(ctx, kAdminKey);
    tm::CreateTenantRequest request;
    request.set_tenant_id("other");
    request.set_name("other");
    request.set_create_admin_key(true);
    tm::CreateTenantResponse response;
    const grpc::Status status = tenants->CreateTenant(&ctx, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    *other_key_ = response.admin_key_secret();
  }

  static void TearDownTestSuite() {
    delete subscriber_;
    for (auto*& r : replicas_) {
      delete r;
      r = nullptr;
    }
    delete thing_model_;
    delete broker_;
    delete redis_;
  }

  static iot::testing::ServiceProcessOptions ReplicaOptions(int i, int max_attempts) {
    return {.binary = "rule-forwarding",
            .env_prefix = "IOT_RULE_FORWARDING",
            .env = {{"IOT_PG_URL", *pg_url_},
                    {"IOT_REDIS_URL", redis_->Url()},
                    {"IOT_MQTT_URL", broker_->Url()},
                    {"IOT_RULE_FORWARDING_MQTT_CLIENT_ID", fmt::format("rule-forwarding-{}", i)},
                    {"IOT_RULE_FORWARDING_MAX_ATTEMPTS", std::to_string(max_attempts)},
                    {"IOT_RULE_FORWARDING_RETRY_INITIAL", "50ms"},
                    {"IOT_RULE_FORWARDING_RETRY_MAX", "200ms"},
                    {"IOT_RULE_FORWARDING_OUTBOX_LEASE", "1s"},
                    {"IOT_SECRET_KEY", kSecretKey},
                    // The webhook sink and the target database of these tests are local.
                    {"IOT_RULE_FORWARDING_DESTINATION_ALLOWLIST", "127.0.0.1/32"},
                    {"IOT_LOG_LEVEL", "debug"}},
            .args = {}};
  }

  static std::unique_ptr<rf::Rules::Stub> Rules(int replica = 0) {
    return rf::Rules::NewStub(
        grpc::CreateChannel(replicas_[replica]->address(), grpc::InsecureChannelCredentials()));
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key = kAdminKey) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    common::SetBearer(*ctx, key);
    ctx->set_deadline(std::chrono::system_clock::now() + seconds(10));
    return ctx;
  }

  static rf::CreateRuleRequest RuleRequest(const std::string& sql, const std::string& type,
                                           const nlohmann::json& config) {
    rf::CreateRuleRequest request;
    request.set_name("rule");
    request.set_resource("device.property");
    request.set_sql(sql);
    auto* action = request.add_actions();
    action->set_type(type);
    action->set_config_json(config.dump());
    return request;
  }

  static rf::Rule Create(const rf::CreateRuleRequest& request, const std::string& key = kAdminKey,
                         int replica = 0) {
    rf::Rule rule;
    const grpc::Status status = Rules(replica)->CreateRule(Ctx(key).get(), request, &rule);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return rule;
  }

  /// Calls InternalIngest as the gateway does: one record per (message id, temperature).
  static grpc::Status Ingest(const std::string& device,
                             const std::vector<std::pair<std::string, double>>& records,
                             int replica = 0, const std::string& tenant = "default",
                             const std::string& key = kServiceKey) {
    auto stub = rf::InternalIngest::NewStub(
        grpc::CreateChannel(replicas_[replica]->address(), grpc::InsecureChannelCredentials()));
    rf::IngestRequest request;
    for (const auto& [id, temperature] : records) {
      auto* r = request.add_records();
      r->set_message_id(id);
      r->mutable_device()->set_tenant_id(tenant);
      r->mutable_device()->set_device_id(device);
      r->mutable_device()->set_product_id("meter");
      r->mutable_device()->set_node_id("n1");
      r->set_resource("device.property");
      r->set_event("report");
      r->set_topic("$oc/devices/" + device + "/sys/properties/report");
      r->set_event_time_unix_ms(1'790'000'000'000);
      r->set_envelope_json(Envelope(tenant, device, temperature));
    }
    iot::device_gateway::v1::IngestAck ack;
    return stub->Ingest(Ctx(key).get(), request, &ack);
  }

  static double Metric(int replica, const std::string& name,
                       const std::map<std::string, std::string>& labels) {
    auto series = iot::testing::ParsePrometheusText(replicas_[replica]->Metrics());
    return series.ok() ? iot::testing::SumSeries(*series, name, labels) : -1;
  }

  static inline iot::testing::TestRedis* redis_ = nullptr;
  static inline iot::testing::TestMosquitto* broker_ = nullptr;
  static inline iot::testing::ThingModelProcess* thing_model_ = nullptr;
  static inline iot::testing::ServiceProcess* replicas_[3] = {nullptr, nullptr, nullptr};
  static inline std::string* pg_url_ = new std::string();
  static inline Subscriber* subscriber_ = nullptr;
  static inline std::string* other_key_ = new std::string();
};

TEST_F(RulesTest, InvalidSqlAndUnknownActionTypeAreInvalidArgument) {
  rf::Rule rule;
  auto bad_sql = RuleRequest("SELECT a WHERE a >", "republish", {{"topic", "x"}});
  grpc::Status status = Rules()->CreateRule(Ctx().get(), bad_sql, &rule);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("sql: line 1, column 19"), std::string::npos)
      << status.error_message();
  EXPECT_NE(status.error_message().find("expected"), std::string::npos) << status.error_message();

  auto bad_type = RuleRequest("SELECT *", "kafka", nlohmann::json::object());
  status = Rules()->CreateRule(Ctx().get(), bad_type, &rule);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("actions[0].type"), std::string::npos)
      << status.error_message();

  auto bad_config = RuleRequest("SELECT *", "webhook", {{"url", "gopher://x"}});
  status = Rules()->CreateRule(Ctx().get(), bad_config, &rule);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("actions[0].config.url"), std::string::npos)
      << status.error_message();

  // A tenant key cannot call the gateway's internal RPC.
  EXPECT_EQ(Ingest("dev-x", {{"x-1", 1}}, 0, "default", kAdminKey).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(RulesTest, WhereForwardsOnlyMatchingRecordsAndDuplicatesOnce) {
  auto request = RuleRequest(
      "SELECT device_id() AS device, notify_data.body.services[0].properties.temperature AS t "
      "FROM '$oc/devices/+/sys/properties/report' "
      "WHERE notify_data.body.services[0].properties.temperature > 30",
      "republish", {{"topic", "alerts/${device_id}"}, {"qos", 1}});
  request.set_device_id("dev-where");
  const rf::Rule rule = Create(request);
  EXPECT_EQ(rule.status(), "active");

  ASSERT_TRUE(Ingest("dev-where", {{"w-1", 35}, {"w-2", 20}, {"w-3", 31.5}}).ok());
  ASSERT_TRUE(Ingest("dev-where", {{"w-1", 35}, {"w-3", 31.5}}).ok());  // the gateway's retry
  ASSERT_TRUE(Ingest("dev-where", {{"w-4", 40}}).ok());
  ASSERT_TRUE(subscriber_->WaitFor("alerts/dev-where", 3));
  const auto got = subscriber_->On("alerts/dev-where");
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(got[0]), (nlohmann::json{{"device", "dev-where"}, {"t", 35}}));
  EXPECT_EQ(nlohmann::json::parse(got[1])["t"], 31.5);
  EXPECT_EQ(nlohmann::json::parse(got[2])["t"], 40);
  // Another device of the tenant is outside the rule's scope (w-6 follows it through the queue).
  ASSERT_TRUE(Ingest("dev-elsewhere", {{"w-5", 50}}).ok());
  ASSERT_TRUE(Ingest("dev-where", {{"w-6", 60}}).ok());
  ASSERT_TRUE(subscriber_->WaitFor("alerts/dev-where", 4));
  EXPECT_TRUE(subscriber_->On("alerts/dev-elsewhere").empty());
  EXPECT_GE(Metric(0, "iot_rf_ingested_records_total", {{"outcome", "duplicate"}}), 2);
}

TEST_F(RulesTest, PostgresActionInsertsSelectedFields) {
  const std::string target = iot::testing::CreateTestDatabase();
  {
    pqxx::connection c(target);
    pqxx::work tx(c);
    tx.exec(
        "CREATE SCHEMA app; CREATE TABLE app.readings (device text, t double precision, "
        "delivery text UNIQUE, at timestamptz DEFAULT now())");
    tx.commit();
  }
  auto request = RuleRequest(
      "SELECT device_id() AS device, notify_data.body.services[0].properties.temperature AS t",
      "postgres", {{"url", target}, {"table", "app.readings"}, {"id_column", "delivery"}});
  request.set_device_id("dev-pg");
  const rf::Rule rule = Create(request);
  // ShowRule masks nothing here (no password in the URL) and returns the settings as stored.
  rf::ShowRuleRequest show;
  show.set_rule_id(rule.rule_id());
  rf::Rule shown;
  ASSERT_TRUE(Rules()->ShowRule(Ctx().get(), show, &shown).ok());
  EXPECT_EQ(nlohmann::json::parse(shown.actions(0).config_json())["table"], "app.readings");

  ASSERT_TRUE(Ingest("dev-pg", {{"pg-1", 21.5}, {"pg-2", 22}, {"pg-3", 23}}).ok());
  pqxx::connection c(target);
  const auto count = [&] {
    pqxx::read_transaction tx(c);
    return tx.exec("SELECT count(*) FROM app.readings")[0][0].as<int>();
  };
  ASSERT_TRUE(WaitUntil([&] { return count() == 3; }, seconds(10))) << count();
  pqxx::read_transaction tx(c);
  auto rows = tx.exec("SELECT device, t, delivery FROM app.readings ORDER BY t");
  EXPECT_EQ(rows[0][0].as<std::string>(), "dev-pg");
  EXPECT_EQ(rows[0][1].as<double>(), 21.5);
  EXPECT_EQ(rows[0][2].as<std::string>(), "pg-1:" + rule.rule_id() + ":0");
}

TEST_F(RulesTest, WebhookFailingTwiceIsDeliveredSignedOnTheThirdAttempt) {
  HttpSink sink([](int n) { return n <= 2 ? 503 : 200; });
  const std::string secret = "webhook-secret-0123456789";
  auto request =
      RuleRequest("SELECT notify_data.body.services[0].properties.temperature AS t", "webhook",
                  {{"url", sink.Url()}, {"secret", secret}, {"timeout_ms", 2000}});
  request.set_device_id("dev-hook");
  const rf::Rule rule = Create(request);
  EXPECT_EQ(nlohmann::json::parse(rule.actions(0).config_json())["secret"], "***");

  ASSERT_TRUE(Ingest("dev-hook", {{"h-1", 30}}).ok());
  ASSERT_TRUE(WaitUntil([&] { return sink.requests().size() >= 3; }, seconds(10)));
  const auto requests = sink.requests();
  EXPECT_EQ(requests.back().status, 200);
  EXPECT_EQ(nlohmann::json::parse(requests.back().body), (nlohmann::json{{"t", 30}}));
  EXPECT_EQ(requests.back().headers.at("x-iot-signature"),
            "sha256=" + common::HmacSha256Hex(secret, requests.back().body));
  EXPECT_EQ(requests.back().headers.at("x-iot-delivery-id"), "h-1:" + rule.rule_id() + ":0");
  EXPECT_GE(Metric(0, "iot_rf_deliveries_total", {{"type", "webhook"}, {"outcome", "retried"}}), 2);
}

TEST_F(RulesTest, WebhookFailingForGoodBecomesADeadLetter) {
  HttpSink sink([](int) { return 500; });
  auto request = RuleRequest("SELECT *", "webhook", {{"url", sink.Url()}});
  request.set_device_id("dev-dead");
  const rf::Rule rule = Create(request);
  ASSERT_TRUE(Ingest("dev-dead", {{"d-1", 99}}).ok());

  rf::ListDeadLettersRequest list;
  list.set_rule_id(rule.rule_id());
  rf::ListDeadLettersResponse letters;
  ASSERT_TRUE(WaitUntil(
      [&] {
        letters.Clear();
        return Rules()->ListDeadLetters(Ctx().get(), list, &letters).ok() &&
               letters.dead_letters_size() == 1;
      },
      seconds(10)));
  const rf::DeadLetter& letter = letters.dead_letters(0);
  EXPECT_EQ(letter.action_type(), "webhook");
  EXPECT_EQ(letter.attempts(), 3);
  EXPECT_EQ(letter.delivery_id(), "d-1:" + rule.rule_id() + ":0");
  EXPECT_NE(letter.error().find("HTTP 500"), std::string::npos) << letter.error();
  EXPECT_EQ(sink.requests().size(), 3u);
  EXPECT_GE(Metric(0, "iot_rf_dead_letters_total", {{"type", "webhook"}}), 1);
  // Another tenant sees none of it.
  rf::ListDeadLettersResponse theirs;
  ASSERT_TRUE(Rules()->ListDeadLetters(Ctx(*other_key_).get(), list, &theirs).ok());
  EXPECT_EQ(theirs.dead_letters_size(), 0);
}

TEST_F(RulesTest, RuleChangesReachTheOtherReplicaWithinOneSecond) {
  auto request = RuleRequest("SELECT *", "republish", {{"topic", "replica/on"}});
  request.set_device_id("dev-replica");
  const auto created = std::chrono::steady_clock::now();
  const rf::Rule rule = Create(request, kAdminKey, 0);
  // Replica 1 gets a record every 10 ms until one is forwarded: how long the change took there.
  int sent = 0;
  const bool seen = WaitUntil(
      [&] {
        EXPECT_TRUE(Ingest("dev-replica", {{fmt::format("r-{}", sent++), 1}}, 1).ok());
        return WaitUntil([&] { return !subscriber_->On("replica/on").empty(); }, milliseconds(10));
      },
      seconds(5));
  const auto took =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - created);
  ASSERT_TRUE(seen);
  std::cout << "rule created on replica 0 forwarded by replica 1 after " << took.count() << " ms\n";
  EXPECT_LE(took, seconds(1));

  // Disabled on replica 0; replica 1 stops forwarding. A second rule is the sentinel.
  rf::ChangeRuleStatusRequest change;
  change.set_rule_id(rule.rule_id());
  change.set_status("inactive");
  rf::Rule changed;
  ASSERT_TRUE(Rules(0)->ChangeRuleStatus(Ctx().get(), change, &changed).ok());
  EXPECT_EQ(changed.status(), "inactive");
  auto sentinel = RuleRequest("SELECT *", "republish", {{"topic", "replica/sentinel"}});
  sentinel.set_device_id("dev-replica");
  Create(sentinel, kAdminKey, 0);
  // Temperature-1 records until replica 1 forwards one to the sentinel: it has the new rules.
  ASSERT_TRUE(WaitUntil(
      [&] {
        EXPECT_TRUE(Ingest("dev-replica", {{fmt::format("r-{}", sent++), 1}}, 1).ok());
        return WaitUntil([&] { return !subscriber_->On("replica/sentinel").empty(); },
                         milliseconds(10));
      },
      seconds(5)));
  const size_t sentinels = subscriber_->On("replica/sentinel").size();
  ASSERT_TRUE(Ingest("dev-replica", {{"r-last", 2}}, 1).ok());
  ASSERT_TRUE(subscriber_->WaitFor("replica/sentinel", sentinels + 1));
  // Every record forwarded on replica/on was one of the temperature-1 records sent before.
  for (const std::string& payload : subscriber_->On("replica/on")) {
    EXPECT_EQ(nlohmann::json::parse(
                  payload)["notify_data"]["body"]["services"][0]["properties"]["temperature"],
              1)
        << payload;
  }
}

TEST_F(RulesTest, TenantsSeeAndTriggerOnlyTheirOwnRules) {
  auto request = RuleRequest("SELECT *", "republish", {{"topic", "iso/default"}});
  const rf::Rule mine = Create(request);
  auto theirs_request = RuleRequest("SELECT *", "republish", {{"topic", "iso/other"}});
  Create(theirs_request, *other_key_);

  rf::ShowRuleRequest show;
  show.set_rule_id(mine.rule_id());
  rf::Rule shown;
  EXPECT_EQ(Rules()->ShowRule(Ctx(*other_key_).get(), show, &shown).error_code(),
            grpc::StatusCode::NOT_FOUND);
  rf::DeleteRuleRequest del;
  del.set_rule_id(mine.rule_id());
  rf::DeleteRuleResponse deleted;
  EXPECT_EQ(Rules()->DeleteRule(Ctx(*other_key_).get(), del, &deleted).error_code(),
            grpc::StatusCode::NOT_FOUND);
  rf::UpdateRuleRequest update;
  update.set_rule_id(mine.rule_id());
  update.set_name("stolen");
  update.set_resource("device.property");
  update.set_sql("SELECT *");
  *update.add_actions() = theirs_request.actions(0);
  EXPECT_EQ(Rules()->UpdateRule(Ctx(*other_key_).get(), update, &shown).error_code(),
            grpc::StatusCode::NOT_FOUND);
  rf::ListRulesResponse listed;
  ASSERT_TRUE(Rules()->ListRules(Ctx(*other_key_).get(), rf::ListRulesRequest(), &listed).ok());
  ASSERT_EQ(listed.rules_size(), 1);
  EXPECT_EQ(listed.rules(0).actions(0).config_json(), R"({"topic":"iso/other"})");

  // A record of tenant "other" triggers only its rule.
  ASSERT_TRUE(Ingest("dev-iso", {{"i-1", 1}}, 0, "other").ok());
  ASSERT_TRUE(subscriber_->WaitFor("iso/other", 1));
  EXPECT_TRUE(subscriber_->On("iso/default").empty());
  // The owner deletes it; it is gone.
  ASSERT_TRUE(Rules()->DeleteRule(Ctx().get(), del, &deleted).ok());
  EXPECT_EQ(Rules()->ShowRule(Ctx().get(), show, &shown).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(RulesTest, IotctlManagesRulesAndShowsSqlErrors) {
  iot::testing::TempDir dir("iot-rules-files");
  const auto write = [&](const std::string& name, const nlohmann::json& body) {
    const auto path = dir.path() / name;
    std::ofstream(path) << body.dump();
    return path.string();
  };
  const std::string address = replicas_[0]->address();
  const nlohmann::json rule = {
      {"name", "from iotctl"},
      {"resource", "device.message"},
      {"sql", "SELECT * WHERE notify_data.body.content = 'hi'"},
      {"actions", {{{"type", "republish"}, {"config_json", R"({"topic":"cli/out"})"}}}}};
  CommandResult created =
      Iotctl(address, kAdminKey, {"--json", "rule", "create", "-f", write("rule.json", rule)});
  ASSERT_EQ(created.code, 0) << created.output;
  const std::string rule_id = nlohmann::json::parse(created.output)["rule_id"];

  CommandResult disabled = Iotctl(address, kAdminKey, {"rule", "disable", rule_id});
  ASSERT_EQ(disabled.code, 0) << disabled.output;
  EXPECT_NE(disabled.output.find("inactive"), std::string::npos) << disabled.output;
  CommandResult listed =
      Iotctl(address, kAdminKey, {"rule", "list", "--resource", "device.message"});
  ASSERT_EQ(listed.code, 0) << listed.output;
  EXPECT_NE(listed.output.find(rule_id), std::string::npos) << listed.output;

  nlohmann::json bad = rule;
  bad["sql"] = "SELECT * WHERE";
  CommandResult refused =
      Iotctl(address, kAdminKey, {"rule", "create", "-f", write("bad.json", bad)});
  EXPECT_EQ(refused.code, 1) << refused.output;
  EXPECT_NE(refused.output.find("INVALID_ARGUMENT"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("sql: line 1, column 15"), std::string::npos) << refused.output;

  CommandResult deleted = Iotctl(address, kAdminKey, {"rule", "delete", rule_id});
  EXPECT_EQ(deleted.code, 0) << deleted.output;
  CommandResult gone = Iotctl(address, kAdminKey, {"rule", "show", rule_id});
  EXPECT_EQ(gone.code, 1) << gone.output;
  EXPECT_NE(gone.output.find("NOT_FOUND"), std::string::npos) << gone.output;
}

TEST_F(RulesTest, DeliveriesOfACrashedReplicaAreTakenOverFromTheOutbox) {
  std::atomic<bool> up{false};
  HttpSink sink([&](int) { return up ? 200 : 503; });
  auto request = RuleRequest("SELECT *", "webhook", {{"url", sink.Url()}});
  request.set_device_id("dev-crash");
  const rf::Rule rule = Create(request);
  // A third replica that keeps retrying takes the record, then dies without a word.
  replicas_[2] = new iot::testing::ServiceProcess(ReplicaOptions(2, 100));
  ASSERT_TRUE(replicas_[2]->WaitServing()) << replicas_[2]->process().Log();
  ASSERT_TRUE(Ingest("dev-crash", {{"k-1", 7}}, 2).ok());
  ASSERT_TRUE(WaitUntil([&] { return !sink.requests().empty(); }, seconds(10)));
  replicas_[2]->process().Signal(SIGKILL);
  ASSERT_TRUE(replicas_[2]->process().Wait(seconds(10)).has_value());
  up = true;
  // Another replica takes it over once the dead one's lease (1 s) ran out.
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto r = sink.requests();
        return !r.empty() && r.back().status == 200;
      },
      seconds(15)))
      << sink.requests().size();
  EXPECT_EQ(sink.requests().back().headers.at("x-iot-delivery-id"), "k-1:" + rule.rule_id() + ":0");
}

}  // namespace
}  // namespace iot
