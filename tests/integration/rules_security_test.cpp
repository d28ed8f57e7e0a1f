// rule-forwarding against hostile tenants (issue #15, items 4 and 5), end to end with the real
// service, thing-model, PostgreSQL, Redis and the broker:
// - rule actions that open connections (webhook, postgres) cannot reach loopback, private or
//   link-local addresses nor the platform's own database: refused at CreateRule/UpdateRule
//   (INVALID_ARGUMENT naming the field) and again at delivery (a dead letter), unless the
//   operator's allow-list (IOT_RULE_FORWARDING_DESTINATION_ALLOWLIST) names them;
// - actions' secrets are sealed in PostgreSQL (rules and outbox), never returned by the API nor
//   logged, and still delivered; rows stored in plain text before are sealed at start-up.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <set>

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "iot/testing/http_sink.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot {
namespace {

namespace rf = iot::rule_forwarding::v1;
using iot::testing::HttpSink;
using iot::testing::WaitUntil;
using std::chrono::seconds;

const std::string kSecretKey(64, 'c');
const std::string kAdminKey = "rules-security-admin-key-0123456789";
const std::string kServiceKey = "rules-security-service-key-0123456789";
const std::string kWebhookSecret = "webhook-signing-secret-4b1d";
const std::string kDbPassword = "pg-password-7f3e";

/// One rule-forwarding process with its own database.
struct Replica {
  std::string pg_url;
  std::unique_ptr<iot::testing::ServiceProcess> process;

  [[nodiscard]] std::unique_ptr<rf::Rules::Stub> Rules() const {
    return rf::Rules::NewStub(
        grpc::CreateChannel(process->address(), grpc::InsecureChannelCredentials()));
  }
};

/// A rule row as a version before the checks and sealing wrote it: straight into PostgreSQL,
/// its settings in plain text.
void InsertPlainRule(pqxx::work& tx, const std::string& rule_id, const std::string& device_id,
                     const nlohmann::json& actions) {
  tx.exec_params(
      "INSERT INTO rule_forwarding.rules (tenant_id, rule_id, name, resource, device_id, sql, "
      "actions, secrets_sealed) VALUES ('default', $1, 'old', 'device.property', $2, "
      "'SELECT *', $3::jsonb, false)",
      rule_id, device_id, actions.dump());
}

class RulesSecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new iot::testing::TestRedis();
    thing_model_ = new iot::testing::ThingModelProcess({.redis_url = redis_->Url(),
                                                        .secret_key = kSecretKey,
                                                        .admin_key = kAdminKey,
                                                        .service_key = kServiceKey,
                                                        .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    guarded_ = StartReplica("");
    allowed_ = StartReplica("127.0.0.1/32");
  }

  static void TearDownTestSuite() {
    delete guarded_;
    delete allowed_;
    delete thing_model_;
    delete redis_;
  }

  static Replica* StartReplica(const std::string& allowlist) {
    auto* replica = new Replica{.pg_url = iot::testing::CreateTestDatabase(), .process = {}};
    std::map<std::string, std::string> env = {
        {"IOT_PG_URL", replica->pg_url},
        {"IOT_REDIS_URL", redis_->Url()},
        {"IOT_MQTT_URL", iot::testing::SharedMqttUrl()},
        {"IOT_RULE_FORWARDING_MQTT_CLIENT_ID",
         fmt::format("rule-forwarding-security-{}", iot::testing::FreePort())},
        {"IOT_SECRET_KEY", kSecretKey},
        {"IOT_SERVICE_API_KEY", kServiceKey},
        {"IOT_THING_MODEL_ADDR", thing_model_->address()},
        {"IOT_RULE_FORWARDING_MAX_ATTEMPTS", "100"},
        {"IOT_RULE_FORWARDING_RETRY_INITIAL", "50ms"},
        {"IOT_RULE_FORWARDING_RETRY_MAX", "100ms"},
        {"IOT_RULE_FORWARDING_RULES_RELOAD_INTERVAL", "300ms"},
        {"IOT_RULE_FORWARDING_OUTBOX_LEASE", "1s"},
        {"IOT_LOG_LEVEL", "debug"}};
    if (!allowlist.empty()) {
      env["IOT_RULE_FORWARDING_DESTINATION_ALLOWLIST"] = allowlist;
    }
    replica->process = std::make_unique<iot::testing::ServiceProcess>(
        iot::testing::ServiceProcessOptions{.binary = "rule-forwarding",
                                            .env_prefix = "IOT_RULE_FORWARDING",
                                            .env = env,
                                            .args = {}});
    EXPECT_TRUE(replica->process->WaitServing()) << replica->process->process().Log();
    return replica;
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key = kAdminKey) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    common::SetBearer(*ctx, key);
    ctx->set_deadline(std::chrono::system_clock::now() + seconds(10));
    return ctx;
  }

  static rf::CreateRuleRequest RuleRequest(
      const std::string& device,
      const std::vector<std::pair<std::string, nlohmann::json>>& actions) {
    rf::CreateRuleRequest request;
    request.set_name("security");
    request.set_resource("device.property");
    request.set_device_id(device);
    request.set_sql(
        "SELECT device_id() AS device, "
        "notify_data.body.services[0].properties.temperature AS t");
    for (const auto& [type, config] : actions) {
      auto* action = request.add_actions();
      action->set_type(type);
      action->set_config_json(config.dump());
    }
    return request;
  }

  /// InternalIngest as the gateway calls it: one property report of `device`.
  static grpc::Status Ingest(const Replica& replica, const std::string& device,
                             const std::string& message_id, double temperature) {
    auto stub = rf::InternalIngest::NewStub(
        grpc::CreateChannel(replica.process->address(), grpc::InsecureChannelCredentials()));
    rf::IngestRequest request;
    auto* r = request.add_records();
    r->set_message_id(message_id);
    r->mutable_device()->set_tenant_id("default");
    r->mutable_device()->set_device_id(device);
    r->mutable_device()->set_product_id("meter");
    r->mutable_device()->set_node_id("n1");
    r->set_resource("device.property");
    r->set_event("report");
    r->set_topic("$oc/devices/" + device + "/sys/properties/report");
    r->set_event_time_unix_ms(1'790'000'000'000);
    r->set_envelope_json(nlohmann::json{
        {"resource", "device.property"},
        {"event", "report"},
        {"event_time", "20261126T200000Z"},
        {"notify_data",
         {{"header", {{"device_id", device}, {"product_id", "meter"}, {"tenant_id", "default"}}},
          {"body",
           {{"services",
             {{{"service_id", "env"}, {"properties", {{"temperature", temperature}}}}}}}}}}}
                             .dump());
    iot::device_gateway::v1::IngestAck ack;
    return stub->Ingest(Ctx(kServiceKey).get(), request, &ack);
  }

  static std::vector<rf::DeadLetter> DeadLetters(const Replica& replica, const std::string& rule_id,
                                                 size_t at_least) {
    rf::ListDeadLettersRequest list;
    list.set_rule_id(rule_id);
    rf::ListDeadLettersResponse letters;
    EXPECT_TRUE(WaitUntil(
        [&] {
          letters.Clear();
          return replica.Rules()->ListDeadLetters(Ctx().get(), list, &letters).ok() &&
                 static_cast<size_t>(letters.dead_letters_size()) >= at_least;
        },
        seconds(20)))
        << letters.DebugString();
    return {letters.dead_letters().begin(), letters.dead_letters().end()};
  }

  /// A database with table app.readings (device, t, delivery) that role `app` (password
  /// kDbPassword) may write.
  static std::string TargetDatabase() {
    std::string url = iot::testing::CreateTestDatabase();
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN "
        "CREATE ROLE app LOGIN PASSWORD '" +
        kDbPassword +
        "'; END IF; END $$;"
        "CREATE SCHEMA app; CREATE TABLE app.readings (device text, t double precision, "
        "delivery text UNIQUE); GRANT USAGE ON SCHEMA app TO app; "
        "GRANT INSERT, SELECT ON app.readings TO app");
    tx.commit();
    return url;
  }

  static int Rows(const std::string& url) {
    pqxx::connection c(url);
    pqxx::read_transaction tx(c);
    return tx.exec("SELECT count(*) FROM app.readings")[0][0].as<int>();
  }

  /// `url` (postgresql://user@host:port/db) as role app with its password.
  static std::string AsApp(const std::string& url) {
    const size_t at = url.find('@');
    return "postgresql://app:" + kDbPassword + url.substr(at);
  }

  /// The stored text of a rule's actions and its sealed flag, read from PostgreSQL directly.
  static std::pair<std::string, bool> StoredActions(const Replica& replica,
                                                    const std::string& rule_id) {
    pqxx::connection c(replica.pg_url);
    pqxx::read_transaction tx(c);
    auto row = tx.exec_params1(
        "SELECT actions::text, secrets_sealed FROM rule_forwarding.rules WHERE rule_id = $1",
        rule_id);
    return {row[0].as<std::string>(), row[1].as<bool>()};
  }

  static inline iot::testing::TestRedis* redis_ = nullptr;
  static inline iot::testing::ThingModelProcess* thing_model_ = nullptr;
  static inline Replica* guarded_ = nullptr;  // no allow-list
  static inline Replica* allowed_ = nullptr;  // allow-list 127.0.0.1/32
};

TEST_F(RulesSecurityTest, ActionsToInternalAddressesAreRefusedWhenTheRuleIsSaved) {
  const std::string own_db = guarded_->pg_url;  // the platform's own database
  const std::string own_host_port = own_db.substr(own_db.find('@') + 1);
  const std::vector<std::string> hosts = {"127.0.0.1", "localhost",       "10.0.0.1",
                                          "[::1]",     "169.254.169.254", "[::ffff:127.0.0.1]",
                                          "0.0.0.0",   "100.64.0.1",      "192.168.1.1"};
  std::vector<std::pair<std::string, nlohmann::json>> refused;
  for (const std::string& host : hosts) {
    refused.emplace_back("webhook", nlohmann::json{{"url", "http://" + host + ":8080/hook"}});
    refused.emplace_back(
        "postgres",
        nlohmann::json{{"url", "postgresql://u:p@" + host + ":5432/db"}, {"table", "t"}});
  }
  refused.emplace_back("postgres",
                       nlohmann::json{{"url", "postgresql://postgres:x@" + own_host_port},
                                      {"table", "rule_forwarding.rules"}});
  for (const auto& [type, config] : refused) {
    rf::Rule rule;
    const grpc::Status status =
        guarded_->Rules()->CreateRule(Ctx().get(), RuleRequest("dev-x", {{type, config}}), &rule);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << config.dump();
    EXPECT_NE(status.error_message().find("actions[0].config.url"), std::string::npos)
        << status.error_message();
  }

  // A rule with a public destination cannot be moved to an internal one by UpdateRule.
  rf::Rule rule;
  ASSERT_TRUE(
      guarded_->Rules()
          ->CreateRule(Ctx().get(),
                       RuleRequest("dev-x", {{"webhook", {{"url", "https://93.184.216.34/h"}}}}),
                       &rule)
          .ok());
  rf::UpdateRuleRequest update;
  update.set_rule_id(rule.rule_id());
  update.set_name("moved");
  update.set_resource("device.property");
  update.set_sql("SELECT *");
  auto* action = update.add_actions();
  action->set_type("republish");
  action->set_config_json(R"({"topic":"a"})");
  action = update.add_actions();
  action->set_type("postgres");
  action->set_config_json(
      nlohmann::json{{"url", "postgresql://u:p@127.0.0.1/db"}, {"table", "t"}}.dump());
  const grpc::Status updated = guarded_->Rules()->UpdateRule(Ctx().get(), update, &rule);
  EXPECT_EQ(updated.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(updated.error_message().find("actions[1].config.url"), std::string::npos)
      << updated.error_message();

  // The allow-list opens what it names (the webhook below), and nothing else.
  HttpSink sink([](int) { return 200; });
  EXPECT_TRUE(allowed_->Rules()
                  ->CreateRule(Ctx().get(),
                               RuleRequest("dev-x", {{"webhook", {{"url", sink.Url()}}}}), &rule)
                  .ok());
  EXPECT_EQ(
      allowed_->Rules()
          ->CreateRule(Ctx().get(),
                       RuleRequest("dev-x", {{"webhook", {{"url", "http://10.0.0.1/h"}}}}), &rule)
          .error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(RulesSecurityTest, ARuleStoredWithAnInternalDestinationIsRefusedAtDelivery) {
  // As if saved before the check existed, or by a name that resolved elsewhere back then: the
  // row goes into PostgreSQL directly. Each action must end as a dead letter, never connect.
  HttpSink sink([](int) { return 200; });
  const std::string target = TargetDatabase();
  const nlohmann::json actions = nlohmann::json::array(
      {{{"type", "webhook"}, {"config", {{"url", sink.Url()}}}},
       {{"type", "postgres"}, {"config", {{"url", AsApp(target)}, {"table", "app.readings"}}}}});
  {
    pqxx::connection c(guarded_->pg_url);
    pqxx::work tx(c);
    InsertPlainRule(tx, "stored-internal", "dev-stored", actions);
    tx.commit();
  }
  // The replica picks the row up at its periodic reload (300 ms here).
  ASSERT_TRUE(WaitUntil(
      [&] {
        rf::ShowRuleRequest show;
        show.set_rule_id("stored-internal");
        rf::Rule rule;
        return guarded_->Rules()->ShowRule(Ctx().get(), show, &rule).ok();
      },
      seconds(10)));
  const auto letters = [&] {
    for (int i = 0; i < 100; ++i) {
      EXPECT_TRUE(Ingest(*guarded_, "dev-stored", fmt::format("stored-{}", i), 20).ok());
      auto found = DeadLetters(*guarded_, "stored-internal", 0);
      if (found.size() >= 2) {
        return found;
      }
      iot::testing::PollPause();
    }
    return DeadLetters(*guarded_, "stored-internal", 2);
  }();
  ASSERT_GE(letters.size(), 2u);
  for (const rf::DeadLetter& letter : letters) {
    EXPECT_EQ(letter.attempts(), 1) << "refused for good at once, not retried";
    EXPECT_NE(letter.error().find("loopback"), std::string::npos) << letter.error();
    EXPECT_EQ(letter.error().find(kDbPassword), std::string::npos) << letter.error();
  }
  EXPECT_EQ(sink.connections(), 0);
  EXPECT_EQ(Rows(target), 0);
}

/// The rule's webhook secret and database password are masked.
void ExpectSecretsMasked(const rf::Rule& rule) {
  ASSERT_EQ(rule.actions_size(), 2);
  const auto webhook = nlohmann::json::parse(rule.actions(0).config_json());
  EXPECT_EQ(webhook["secret"], "***");
  const auto postgres = nlohmann::json::parse(rule.actions(1).config_json());
  EXPECT_EQ(postgres["url"].get<std::string>().find(kDbPassword), std::string::npos);
  EXPECT_NE(postgres["url"].get<std::string>().find("app:***@"), std::string::npos);
  EXPECT_EQ(rule.DebugString().find(kWebhookSecret), std::string::npos);
}

/// The outbox holds deliveries, sealed: neither the webhook secret nor its URL's token shows.
void ExpectOutboxSealed(const std::string& pg_url) {
  pqxx::connection c(pg_url);
  pqxx::read_transaction tx(c);
  auto rows = tx.exec("SELECT item, sealed FROM rule_forwarding.outbox");
  ASSERT_GE(rows.size(), 1u);
  for (const auto& row : rows) {
    EXPECT_TRUE(row[1].as<bool>());
    EXPECT_EQ(row[0].as<std::string>().find(kWebhookSecret), std::string::npos);
    EXPECT_EQ(row[0].as<std::string>().find("hook-token-91c2"), std::string::npos);
  }
}

TEST_F(RulesSecurityTest, SecretsAreSealedAtRestNeverReturnedNorLoggedAndStillDelivered) {
  std::atomic<bool> up{false};
  HttpSink sink([&](int) { return up ? 200 : 503; });
  const std::string target = TargetDatabase();
  const std::string hook_url = sink.Url() + "?token=hook-token-91c2";
  auto request = RuleRequest(
      "dev-sealed",
      {{"webhook", {{"url", hook_url}, {"secret", kWebhookSecret}, {"timeout_ms", 2000}}},
       {"postgres",
        {{"url", AsApp(target)}, {"table", "app.readings"}, {"id_column", "delivery"}}}});
  rf::Rule created;
  ASSERT_TRUE(allowed_->Rules()->CreateRule(Ctx().get(), request, &created).ok());

  // The API masks the secrets, in every answer.
  ExpectSecretsMasked(created);
  rf::ShowRuleRequest show;
  show.set_rule_id(created.rule_id());
  rf::Rule shown;
  ASSERT_TRUE(allowed_->Rules()->ShowRule(Ctx().get(), show, &shown).ok());
  ExpectSecretsMasked(shown);
  rf::ListRulesResponse listed;
  ASSERT_TRUE(allowed_->Rules()->ListRules(Ctx().get(), rf::ListRulesRequest(), &listed).ok());
  for (const rf::Rule& rule : listed.rules()) {
    EXPECT_EQ(rule.DebugString().find(kWebhookSecret), std::string::npos);
    EXPECT_EQ(rule.DebugString().find(kDbPassword), std::string::npos);
  }

  // The stored row holds neither secret (nor the webhook URL's token), only sealed values.
  const auto [stored, sealed] = StoredActions(*allowed_, created.rule_id());
  EXPECT_TRUE(sealed);
  for (const std::string& secret : {kWebhookSecret, kDbPassword, std::string("hook-token-91c2")}) {
    EXPECT_EQ(stored.find(secret), std::string::npos) << stored;
  }
  EXPECT_NE(stored.find("\"sealed\""), std::string::npos) << stored;

  // Delivery while the webhook fails: the delivery waits in the outbox, sealed there too.
  ASSERT_TRUE(Ingest(*allowed_, "dev-sealed", "sealed-1", 21.5).ok());
  ASSERT_TRUE(WaitUntil([&] { return Rows(target) == 1; }, seconds(20))) << Rows(target);
  ASSERT_TRUE(WaitUntil([&] { return sink.requests().size() >= 2; }, seconds(20)));
  ASSERT_NO_FATAL_FAILURE(ExpectOutboxSealed(allowed_->pg_url));
  up = true;
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto r = sink.requests();
        return !r.empty() && r.back().status == 200;
      },
      seconds(20)));
  const auto delivered = sink.requests().back();
  EXPECT_EQ(delivered.headers.at("x-iot-signature"),
            "sha256=" + common::HmacSha256Hex(kWebhookSecret, delivered.body));

  // Nothing secret in the service's log (debug level).
  const std::string log = allowed_->process->process().Log();
  EXPECT_FALSE(log.empty());
  for (const std::string& secret : {kWebhookSecret, kDbPassword, std::string("hook-token-91c2")}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << secret;
  }

  // Sending the masked values back keeps the stored secrets.
  rf::UpdateRuleRequest update;
  update.set_rule_id(created.rule_id());
  update.set_name("renamed");
  update.set_resource(shown.resource());
  update.set_device_id(shown.device_id());
  update.set_sql(shown.sql());
  *update.mutable_actions() = shown.actions();
  rf::Rule renamed;
  ASSERT_TRUE(allowed_->Rules()->UpdateRule(Ctx().get(), update, &renamed).ok());
  ASSERT_TRUE(Ingest(*allowed_, "dev-sealed", "sealed-2", 22).ok());
  ASSERT_TRUE(WaitUntil([&] { return Rows(target) == 2; }, seconds(20))) << Rows(target);
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto r = sink.requests();
        return r.back().headers.at("x-iot-delivery-id") == "sealed-2:" + created.rule_id() + ":0";
      },
      seconds(20)));
  const auto second = sink.requests().back();
  EXPECT_EQ(second.headers.at("x-iot-signature"),
            "sha256=" + common::HmacSha256Hex(kWebhookSecret, second.body));
}

TEST_F(RulesSecurityTest, RowsStoredInPlainTextBeforeSealingAreSealedAtStart) {
  HttpSink sink([](int) { return 200; });
  const nlohmann::json actions = nlohmann::json::array(
      {{{"type", "webhook"}, {"config", {{"url", sink.Url()}, {"secret", kWebhookSecret}}}}});
  // A rule and an undelivered outbox row of a replica long gone, both in plain text.
  const nlohmann::json item = {{"delivery_id", "legacy-1:plain-rule:0"},
                               {"tenant_id", "default"},
                               {"device_id", "dev-plain"},
                               {"product_id", "meter"},
                               {"rule_id", "plain-rule"},
                               {"resource", "device.property"},
                               {"event", "report"},
                               {"topic", "t"},
                               {"event_time_unix_ms", 1},
                               {"action_type", "webhook"},
                               {"action_index", 0},
                               {"config", actions[0]["config"]},
                               {"payload", {{"legacy", true}}}};
  {
    pqxx::connection c(allowed_->pg_url);
    pqxx::work tx(c);
    InsertPlainRule(tx, "plain-rule", "dev-plain", actions);
    tx.exec_params(
        "INSERT INTO rule_forwarding.outbox (owner, item, sealed) VALUES ('gone-replica', $1, "
        "false)",
        item.dump());
    tx.commit();
  }
  // An upgraded replica starts: it seals both before it serves.
  allowed_->process->Restart();
  ASSERT_TRUE(allowed_->process->WaitServing()) << allowed_->process->process().Log();
  const auto [stored, sealed] = StoredActions(*allowed_, "plain-rule");
  EXPECT_TRUE(sealed);
  EXPECT_EQ(stored.find(kWebhookSecret), std::string::npos) << stored;
  {
    pqxx::connection c(allowed_->pg_url);
    pqxx::read_transaction tx(c);
    for (const auto& row : tx.exec("SELECT item, sealed FROM rule_forwarding.outbox")) {
      EXPECT_TRUE(row[1].as<bool>());
      EXPECT_EQ(row[0].as<std::string>().find(kWebhookSecret), std::string::npos);
    }
  }
  // Both still deliver with the right secret: the taken-over outbox row, then a new record.
  ASSERT_TRUE(Ingest(*allowed_, "dev-plain", "legacy-2", 5).ok());
  ASSERT_TRUE(WaitUntil([&] { return sink.requests().size() >= 2; }, seconds(20)))
      << sink.requests().size();
  std::set<std::string> ids;
  for (const auto& r : sink.requests()) {
    ids.insert(r.headers.at("x-iot-delivery-id"));
    EXPECT_EQ(r.headers.at("x-iot-signature"),
              "sha256=" + common::HmacSha256Hex(kWebhookSecret, r.body));
  }
  EXPECT_TRUE(ids.contains("legacy-1:plain-rule:0"));
  EXPECT_TRUE(ids.contains("legacy-2:plain-rule:0"));
}

}  // namespace
}  // namespace iot
