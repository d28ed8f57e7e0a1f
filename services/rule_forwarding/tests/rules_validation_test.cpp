// Rule validation (SQL errors with positions, action types and settings), secret masking and
// routing of a record to the actions of matching rules.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "destinations/settings.h"
#include "iot/common/egress.h"
#include "iot/common/status.h"
#include "iot/rule_forwarding/destinations.h"
#include "iot/rule_forwarding/ingest.h"
#include "iot/rule_forwarding/rules.h"

namespace iot::rule_forwarding {
namespace {

using common::IpAddress;

/// Names resolve through `dns` (one answer after another when there are several; the last one
/// stays); any other name does not resolve.
std::shared_ptr<const common::EgressPolicy> Egress(
    std::map<std::string, std::vector<std::vector<IpAddress>>> dns = {},
    const std::string& allow = "") {
  auto answers =
      std::make_shared<std::map<std::string, std::vector<std::vector<IpAddress>>>>(std::move(dns));
  return std::make_shared<const common::EgressPolicy>(common::EgressPolicy::Options{
      .allow = *common::ParseNetworkList(allow),
      .platform_hosts = {},
      .refuse_local_interfaces = false,
      .resolver = [answers](const std::string& host) -> absl::StatusOr<std::vector<IpAddress>> {
        auto it = answers->find(host);
        if (it == answers->end() || it->second.empty()) {
          return absl::UnavailableError("no such host");
        }
        auto answer = it->second.front();
        if (it->second.size() > 1) {
          it->second.erase(it->second.begin());
        }
        return answer;
      },
      .platform_refresh = std::chrono::seconds(60)});
}

IpAddress Ip(std::string_view text) { return *IpAddress::Parse(text); }

DestinationRegistry Registry(std::shared_ptr<const common::EgressPolicy> egress = Egress()) {
  DestinationRegistry registry;
  for (auto d : {MakePostgresDestination(egress), MakeRepublishDestination(nullptr),
                 MakeWebhookDestination(egress)}) {
    registry.emplace(std::string(d->type()), d);
  }
  return registry;
}

RuleRecord Rule(std::string sql, std::vector<RuleAction> actions) {
  RuleRecord rule;
  rule.tenant_id = "t1";
  rule.rule_id = "r1";
  rule.name = "hot";
  rule.resource = "device.property";
  rule.sql = std::move(sql);
  rule.actions = std::move(actions);
  return rule;
}

RuleAction Republish(const std::string& topic) {
  return RuleAction{.type = "republish", .config = {{"topic", topic}}};
}

class ValidateRuleTest : public ::testing::Test {
 protected:
  absl::Status Check(const RuleRecord& rule) { return ValidateRule(rule, registry_); }
  DestinationRegistry registry_ = Registry();
};

TEST_F(ValidateRuleTest, AcceptsAValidRule) {
  EXPECT_TRUE(Check(Rule("SELECT device_id() WHERE notify_data.body.services[0].properties.t > 30",
                         {Republish("alerts/${device_id}")}))
                  .ok());
}

TEST_F(ValidateRuleTest, InvalidSqlNamesSqlWithPositionAndExpectation) {
  absl::Status s = Check(Rule("SELECT a FROM 'x/#' WHERE a >", {Republish("alerts")}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(common::FieldOf(s), "sql");
  EXPECT_NE(std::string(s.message()).find("line 1, column 30"), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find("expected"), std::string::npos) << s;
  auto error = sql::SqlErrorOf(s);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->column, 30);
}

TEST_F(ValidateRuleTest, UnknownActionTypeNamesItsIndex) {
  absl::Status s =
      Check(Rule("SELECT *", {Republish("alerts"), RuleAction{.type = "kafka", .config = {}}}));
  EXPECT_EQ(common::FieldOf(s), "actions[1].type") << s;
  EXPECT_NE(std::string(s.message()).find("'kafka'"), std::string::npos) << s;
}

TEST_F(ValidateRuleTest, BadActionSettingsNameTheSetting) {
  const std::vector<std::pair<RuleAction, std::string>> cases = {
      {RuleAction{.type = "postgres",
                  .config = {{"url", "postgresql://u@h/db"}, {"table", "x; DROP TABLE y"}}},
       "actions[0].config.table"},
      {RuleAction{.type = "postgres", .config = {{"table", "t"}}}, "actions[0].config.url"},
      {RuleAction{.type = "postgres", .config = {{"url", "mysql://h/db"}, {"table", "t"}}},
       "actions[0].config.url"},
      {Republish("$oc/devices/x/sys/properties/report"), "actions[0].config.topic"},
      {Republish("$oc/devices/x/sys/commands/request_id=1"), "actions[0].config.topic"},
      {Republish("$oc/devices//sys/messages/down"), "actions[0].config.topic"},
      {Republish("$oc/devices/x/user/"), "actions[0].config.topic"},
      {Republish("$oc/devices/x/user/a/+"), "actions[0].config.topic"},
      {Republish("$SYS/broker/load"), "actions[0].config.topic"},
      {Republish("a/+/b"), "actions[0].config.topic"},
      {RuleAction{.type = "republish", .config = {{"topic", "a"}, {"qos", 2}}},
       "actions[0].config.qos"},
      {RuleAction{.type = "webhook", .config = {{"url", "ftp://h/x"}}}, "actions[0].config.url"},
      {RuleAction{.type = "webhook", .config = {{"url", "http://h/x"}, {"timeout_ms", 5}}},
       "actions[0].config.timeout_ms"},
      {RuleAction{.type = "webhook", .config = {{"url", "http://h/x"}, {"color", "red"}}},
       "actions[0].config.color"},
      {RuleAction{.type = "postgres",
                  .config = {{"url", "postgresql://u@h/db?host=127.0.0.1"}, {"table", "t"}}},
       "actions[0].config.url"},
      {RuleAction{.type = "postgres",
                  .config = {{"url", "postgresql://u@h/db?sslmode=none"}, {"table", "t"}}},
       "actions[0].config.url"},
      {RuleAction{.type = "postgres",
                  .config = {{"url", "postgresql://u@%2Fvar%2Frun/db"}, {"table", "t"}}},
       "actions[0].config.url"},
      {RuleAction{.type = "postgres", .config = {{"url", "postgresql://h/db"}, {"table", "t"}}},
       "actions[0].config.url"},
      {RuleAction{.type = "postgres", .config = {{"url", "postgresql://u@h"}, {"table", "t"}}},
       "actions[0].config.url"},
  };
  for (const auto& [action, field] : cases) {
    absl::Status s = Check(Rule("SELECT *", {action}));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << action.config.dump();
    EXPECT_EQ(common::FieldOf(s), field) << action.config.dump() << " " << s;
  }
}

TEST_F(ValidateRuleTest, AcceptsDeviceDownTopics) {
  for (const char* topic :
       {"$oc/devices/${device_id}/sys/messages/down", "$oc/devices/d-1/sys/messages/down",
        "$oc/devices/${device_id}/user/alerts", "$oc/devices/d-1/user/a/b"}) {
    EXPECT_TRUE(Check(Rule("SELECT *", {Republish(topic)})).ok()) << topic;
  }
}

TEST(ClassifyRepublishTopicTest, DeviceDownTopicsAndOthers) {
  auto plain = settings::ClassifyRepublishTopic("app/alerts");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->has_value());
  auto down = settings::ClassifyRepublishTopic("$oc/devices/d-1/sys/messages/down");
  ASSERT_TRUE(down.ok() && down->has_value());
  EXPECT_EQ((*down)->device_id, "d-1");
  EXPECT_EQ((*down)->user_topic, "");
  auto user = settings::ClassifyRepublishTopic("$oc/devices/d-1/user/a/b");
  ASSERT_TRUE(user.ok() && user->has_value());
  EXPECT_EQ((*user)->device_id, "d-1");
  EXPECT_EQ((*user)->user_topic, "a/b");
  for (const char* bad :
       {"$oc/devices/d-1/sys/messages/up", "$oc/devices/d-1/sys/messages/down/x", "$oc/devices/d-1",
        "$oc/devices/d-1/user//a", "$oc/devices/d-1/user/a/", "$oc/other", "$share/g/t"}) {
    auto s = settings::ClassifyRepublishTopic(bad);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(common::FieldOf(s.status()), "topic") << bad;
  }
}

/// Records what the republish destination sends down to devices, answering with `result`.
class FakeDownlink final : public DeviceDownlink {
 public:
  struct Sent {
    std::string tenant_id, device_id, user_topic, payload;
    int qos = 0;
  };
  absl::Status Publish(const std::string& tenant_id, const std::string& device_id,
                       const std::string& user_topic, int qos, std::string payload) override {
    sent.push_back({tenant_id, device_id, user_topic, std::move(payload), qos});
    return result;
  }
  absl::Status result = absl::OkStatus();
  std::vector<Sent> sent;
};

TEST(RepublishDownlinkTest, DeviceTopicsGoThroughTheDownlinkWithTheRuleTenant) {
  auto downlink = std::make_shared<FakeDownlink>();
  auto republish = MakeRepublishDestination(nullptr, downlink);
  const nlohmann::json down = {{"topic", "$oc/devices/${device_id}/sys/messages/down"}};
  const nlohmann::json user = {{"topic", "$oc/devices/other/user/alerts"}, {"qos", 0}};
  std::vector<Delivery> batch(2);
  for (auto& d : batch) {
    d.tenant_id = "t1";
    d.device_id = "d1";
    d.payload = {{"t", 31}};
  }
  batch[0].action_config = &down;
  batch[1].action_config = &user;
  ASSERT_TRUE(republish->Deliver(batch).ok());
  ASSERT_EQ(downlink->sent.size(), 2U);
  EXPECT_EQ(downlink->sent[0].tenant_id, "t1");
  EXPECT_EQ(downlink->sent[0].device_id, "d1");
  EXPECT_EQ(downlink->sent[0].user_topic, "");
  EXPECT_EQ(downlink->sent[0].qos, 1);
  EXPECT_EQ(downlink->sent[0].payload, R"({"t":31})");
  EXPECT_EQ(downlink->sent[1].device_id, "other");
  EXPECT_EQ(downlink->sent[1].user_topic, "alerts");
  EXPECT_EQ(downlink->sent[1].qos, 0);

  downlink->result = absl::UnavailableError("device 'd1' is offline");
  EXPECT_EQ(republish->Deliver(std::span(batch).first(1)).code(), absl::StatusCode::kUnavailable);

  // A `${device_id}` that expands into another shape is refused, never published.
  const nlohmann::json odd = {{"topic", "$oc/devices/${device_id}/user/x"}};
  batch[0].action_config = &odd;
  batch[0].device_id = "a/sys";
  downlink->sent.clear();
  EXPECT_EQ(republish->Deliver(std::span(batch).first(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(downlink->sent.empty());
}

TEST_F(ValidateRuleTest, NameResourceAndActionCount) {
  RuleRecord rule = Rule("SELECT *", {Republish("a")});
  rule.name = "";
  EXPECT_EQ(common::FieldOf(Check(rule)), "name");
  rule = Rule("SELECT *", {Republish("a")});
  rule.resource = "device.telemetry";
  EXPECT_EQ(common::FieldOf(Check(rule)), "resource");
  EXPECT_EQ(common::FieldOf(Check(Rule("SELECT *", {}))), "actions");
}

TEST(RouteTest, MatchesScopeAndWhereAndAddsHistoryForProperties) {
  RuleRecord hot = Rule("SELECT notify_data.body.t AS t WHERE notify_data.body.t > 30",
                        {Republish("a"), Republish("b")});
  RuleRecord other_device = Rule("SELECT *", {Republish("c")});
  other_device.rule_id = "r2";
  other_device.device_id = "someone-else";
  RuleRecord other_tenant = Rule("SELECT *", {Republish("d")});
  other_tenant.rule_id = "r3";
  other_tenant.tenant_id = "t2";
  auto rules = RuleSet::Build({hot, other_device, other_tenant});
  ASSERT_EQ(rules->size(), 3u);

  IngestRecord record{.message_id = "m1",
                      .tenant_id = "t1",
                      .device_id = "d1",
                      .product_id = "p1",
                      .node_id = "n1",
                      .resource = "device.property",
                      .event = "report",
                      .topic = "$oc/devices/d1/sys/properties/report",
                      .event_time_unix_ms = 1,
                      .envelope_json = {}};
  auto items = Route(*rules, record, {{"notify_data", {{"body", {{"t", 35}}}}}}, 0, true);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].delivery.delivery_id, "m1:r1:0");
  EXPECT_EQ(items[1].delivery.delivery_id, "m1:r1:1");
  EXPECT_EQ(items[1].delivery.payload, (nlohmann::json{{"t", 35}}));
  EXPECT_EQ((*items[1].delivery.action_config)["topic"], "b");
  EXPECT_EQ(items[2].action_type, "history");
  EXPECT_EQ(items[2].delivery.delivery_id, "m1:history");

  auto cold = Route(*rules, record, {{"notify_data", {{"body", {{"t", 20}}}}}}, 0, false);
  EXPECT_TRUE(cold.empty());
  record.resource = "device.message";
  EXPECT_TRUE(Route(*rules, record, {{"notify_data", {{"body", {{"t", 35}}}}}}, 0, true).empty());
}

TEST_F(ValidateRuleTest, ActionsThatConnectRefuseInternalAddressesNamingTheField) {
  registry_ = Registry(Egress({{"internal.example", {{Ip("93.184.216.34"), Ip("10.0.0.7")}}},
                               {"public.example", {{Ip("93.184.216.34")}}}}));
  const std::vector<std::string> refused = {
      "127.0.0.1",  "10.1.2.3",         "169.254.169.254",      "[::1]",
      "100.64.0.1", "internal.example", "[::ffff:192.168.0.1]", "0.0.0.0"};
  for (const std::string& host : refused) {
    for (const RuleAction& action :
         {RuleAction{.type = "webhook", .config = {{"url", "http://" + host + ":8080/x"}}},
          RuleAction{.type = "postgres",
          .config = {{"url", "postgresql://u:p@" + host + "/db"}, {"table", "t"}}}}) {
      absl::Status s = Check(Rule("SELECT *", {Republish("a"), action}));
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << host;
      EXPECT_EQ(common::FieldOf(s), "actions[1].config.url") << host << " " << s;
      EXPECT_NE(std::string(s.message()).find("IOT_RULE_FORWARDING_DESTINATION_ALLOWLIST"),
                std::string::npos)
          << s;
    }
  }
  // Public addresses and names that resolve only to public addresses are fine; so is a name
  // that does not resolve yet (it is checked again at every connection).
  for (const std::string host : {"93.184.216.34", "public.example", "not-yet.example"}) {
    EXPECT_TRUE(Check(Rule("SELECT *",
                           {RuleAction{.type = "webhook", .config = {{"url", "https://" + host}}}}))
                    .ok())
        << host;
    EXPECT_TRUE(
        Check(Rule("SELECT *", {RuleAction{.type = "postgres",
                                           .config = {{"url", "postgresql://u:p@" + host + "/d"},
                                                      {"table", "t"}}}}))
            .ok())
        << host;
  }
  // The operator's allow-list opens what it names, and only that.
  registry_ = Registry(Egress({}, "127.0.0.1/32"));
  EXPECT_TRUE(Check(Rule("SELECT *", {RuleAction{.type = "webhook",
                                                 .config = {{"url", "http://127.0.0.1:1/x"}}}}))
                  .ok());
  EXPECT_FALSE(Check(Rule("SELECT *", {RuleAction{.type = "webhook",
                                                  .config = {{"url", "http://127.0.0.2:1/x"}}}}))
                   .ok());
}

/// A listener on 127.0.0.1 that never answers: it counts the connections it gets.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(listen(fd_, 4), 0);
    socklen_t len = sizeof addr;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() { close(fd_); }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;
  [[nodiscard]] uint16_t port() const { return port_; }
  /// Connections waiting to be accepted (the kernel completed them).
  int Pending() {
    int n = 0;
    while (true) {
      pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
      if (poll(&p, 1, 0) <= 0) {
        return n;
      }
      close(accept(fd_, nullptr, nullptr));
      ++n;
    }
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

Delivery DeliveryOf(const nlohmann::json& config) {
  Delivery d;
  d.delivery_id = "m:r:0";
  d.action_config = &config;
  d.payload = {{"a", 1}};
  return d;
}

TEST(WebhookTest, InternalAddressesAreRefusedAtDeliveryUnlessAllowed) {
  SilentListener listener;
  const nlohmann::json config = {{"url", fmt::format("http://127.0.0.1:{}/x", listener.port())},
                                 {"timeout_ms", 300}};
  const Delivery d = DeliveryOf(config);
  absl::Status refused = MakeWebhookDestination(Egress())->Deliver(std::span(&d, 1));
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;  // a dead letter
  EXPECT_NE(std::string(refused.message()).find("loopback"), std::string::npos) << refused;
  EXPECT_EQ(listener.Pending(), 0) << "refused before connecting";
  // Allowed: it gets as far as the listener, which never answers (a retryable timeout).
  absl::Status timed_out =
      MakeWebhookDestination(Egress({}, "127.0.0.1/32"))->Deliver(std::span(&d, 1));
  EXPECT_EQ(timed_out.code(), absl::StatusCode::kUnavailable) << timed_out;
  EXPECT_EQ(listener.Pending(), 1);
}

TEST(WebhookTest, ADnsAnswerThatChangesAfterTheCheckIsCheckedAgainAtDelivery) {
  SilentListener listener;
  // DNS rebinding: public when the rule is saved, loopback when it is delivered.
  auto egress = Egress({{"rebind.example", {{Ip("93.184.216.34")}, {Ip("127.0.0.1")}}}});
  auto webhook = MakeWebhookDestination(egress);
  const nlohmann::json config = {
      {"url", fmt::format("http://rebind.example:{}/x", listener.port())}, {"timeout_ms", 300}};
  EXPECT_TRUE(webhook->ValidateConfig(config).ok());
  const Delivery d = DeliveryOf(config);
  absl::Status refused = webhook->Deliver(std::span(&d, 1));
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
  EXPECT_NE(std::string(refused.message()).find("'rebind.example' resolves to 127.0.0.1"),
            std::string::npos)
      << refused;
  EXPECT_EQ(listener.Pending(), 0);
}

TEST(WebhookTest, TheConnectionGoesToTheCheckedAddressNotToAFreshLookup) {
  SilentListener listener;
  // `pinned.test` exists only in the policy's resolver: curl can reach the listener only
  // through the address the policy checked (and the allow-list admitted).
  auto webhook =
      MakeWebhookDestination(Egress({{"pinned.test", {{Ip("127.0.0.1")}}}}, "127.0.0.1/32"));
  const nlohmann::json config = {{"url", fmt::format("http://pinned.test:{}/x", listener.port())},
                                 {"timeout_ms", 300}};
  const Delivery d = DeliveryOf(config);
  absl::Status status = webhook->Deliver(std::span(&d, 1));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;  // the listener is silent
  EXPECT_EQ(listener.Pending(), 1);
}

TEST(PostgresDestinationTest, InternalAddressesAreRefusedAtDelivery) {
  SilentListener listener;
  auto postgres = MakePostgresDestination(
      Egress({{"rebind.example", {{Ip("93.184.216.34")}, {Ip("127.0.0.1")}}}}));
  const nlohmann::json direct = {
      {"url", fmt::format("postgresql://u:p@127.0.0.1:{}/db", listener.port())}, {"table", "t"}};
  const nlohmann::json rebound = {
      {"url", fmt::format("postgresql://u:p@rebind.example:{}/db", listener.port())},
      {"table", "t"}};
  EXPECT_TRUE(postgres->ValidateConfig(rebound).ok());
  for (const nlohmann::json* config : {&direct, &rebound}) {
    Delivery d = DeliveryOf(*config);
    absl::Status refused = postgres->Deliver(std::span(&d, 1));
    EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
    EXPECT_EQ(std::string(refused.message()).find(":p@"), std::string::npos) << refused;
  }
  EXPECT_EQ(listener.Pending(), 0);
}

}  // namespace
}  // namespace iot::rule_forwarding
