#include "iot/common/mqtt.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot::common {
namespace {

using ::iot::testing::WaitUntil;
using ::testing::UnorderedElementsAreArray;

constexpr auto kTimeout = std::chrono::seconds(20);

std::string Unique(const std::string& name) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t run = std::random_device{}();
  return name + "-" + std::to_string(run) + "-" + std::to_string(++counter);
}

/// Collects what a client receives, from the network thread.
class Inbox {
 public:
  MqttClient::MessageHandler Handler() {
    return [this](const MqttMessage& m) {
      std::lock_guard lock(mutex_);
      messages_.push_back(m);
    };
  }
  size_t size() const {
    std::lock_guard lock(mutex_);
    return messages_.size();
  }
  std::vector<MqttMessage> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  std::vector<std::string> payloads() const {
    std::vector<std::string> out;
    for (const auto& m : messages()) {
      out.push_back(m.payload);
    }
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<MqttMessage> messages_;
};

std::unique_ptr<MqttClient> MakeClient(MqttOptions options, Inbox* inbox = nullptr) {
  if (options.client_id.empty()) {
    options.client_id = Unique("client");
  }
  auto client = MqttClient::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) {
    return nullptr;
  }
  if (inbox != nullptr) {
    (*client)->SetMessageHandler(inbox->Handler());
  }
  return *std::move(client);
}

TEST(MqttClientTest, PublishSubscribeRoundTripQos0AndQos1) {
  const std::string url = iot::testing::SharedMqttUrl();
  const std::string topic = Unique("t/roundtrip");
  Inbox inbox;
  auto sub = MakeClient({.url = url}, &inbox);
  auto pub = MakeClient({.url = url});
  ASSERT_NE(sub, nullptr);
  ASSERT_NE(pub, nullptr);
  ASSERT_TRUE(sub->Subscribe(topic + "/#", 1).ok());
  ASSERT_TRUE(sub->Start().ok());
  ASSERT_TRUE(pub->Start().ok());
  ASSERT_TRUE(sub->WaitSubscribed(kTimeout));
  ASSERT_TRUE(pub->WaitConnected(kTimeout));

  const std::string binary("x\0y\xff", 4);
  ASSERT_TRUE(pub->Publish(topic + "/q0", "zero", 0).ok());
  ASSERT_TRUE(pub->Publish(topic + "/q1", binary, 1).ok());
  ASSERT_TRUE(WaitUntil([&] { return inbox.size() >= 2; }, kTimeout));

  std::map<std::string, MqttMessage> by_topic;
  for (const auto& m : inbox.messages()) {
    by_topic[m.topic] = m;
  }
  ASSERT_EQ(by_topic.size(), 2U);
  EXPECT_EQ(by_topic[topic + "/q0"].payload, "zero");
  EXPECT_EQ(by_topic[topic + "/q0"].qos, 0);
  EXPECT_EQ(by_topic[topic + "/q1"].payload, binary);
  EXPECT_EQ(by_topic[topic + "/q1"].qos, 1);
  EXPECT_FALSE(by_topic[topic + "/q1"].retain);
  EXPECT_EQ(sub->reconnects(), 0U);
}

TEST(MqttClientTest, PublishAndWaitReturnsTheBrokersReasonCode) {
  const std::string url = iot::testing::SharedMqttUrl();
  const std::string topic = Unique("t/acked");
  auto pub = MakeClient({.url = url});
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(pub->PublishAndWait(topic, "x", 1, kTimeout).status().code(),
            absl::StatusCode::kUnavailable);  // not started
  ASSERT_TRUE(pub->Start().ok());
  ASSERT_TRUE(pub->WaitConnected(kTimeout));
  // Nobody subscribed: MQTT v5 PUBACK 0x10 "no matching subscribers".
  auto nobody = pub->PublishAndWait(topic, "x", 1, kTimeout);
  ASSERT_TRUE(nobody.ok()) << nobody.status();
  EXPECT_EQ(*nobody, 0x10);
  Inbox inbox;
  auto sub = MakeClient({.url = url}, &inbox);
  ASSERT_TRUE(sub->Subscribe(topic, 1).ok());
  ASSERT_TRUE(sub->Start().ok());
  ASSERT_TRUE(sub->WaitSubscribed(kTimeout));
  auto delivered = pub->PublishAndWait(topic, "y", 1, kTimeout);
  ASSERT_TRUE(delivered.ok()) << delivered.status();
  EXPECT_EQ(*delivered, 0);
  auto qos0 = pub->PublishAndWait(topic, "z", 0, kTimeout);
  ASSERT_TRUE(qos0.ok()) << qos0.status();
  EXPECT_EQ(*qos0, 0);
  EXPECT_TRUE(WaitUntil([&] { return inbox.size() == 2; }, kTimeout));
  EXPECT_EQ(pub->PublishAndWait(topic, "x", 3, kTimeout).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MqttClientTest, SharedSubscriptionDeliversEachMessageOnce) {
  const std::string url = iot::testing::SharedMqttUrl();
  const std::string topic = Unique("t/shared");
  const std::string filter = "$share/" + Unique("g") + "/" + topic + "/#";
  Inbox inbox_a;
  Inbox inbox_b;
  auto a = MakeClient({.url = url}, &inbox_a);
  auto b = MakeClient({.url = url}, &inbox_b);
  auto pub = MakeClient({.url = url});
  ASSERT_TRUE(a->Subscribe(filter, 1).ok());
  ASSERT_TRUE(b->Subscribe(filter, 1).ok());
  ASSERT_TRUE(a->Start().ok());
  ASSERT_TRUE(b->Start().ok());
  ASSERT_TRUE(pub->Start().ok());
  ASSERT_TRUE(a->WaitSubscribed(kTimeout));
  ASSERT_TRUE(b->WaitSubscribed(kTimeout));
  ASSERT_TRUE(pub->WaitConnected(kTimeout));

  constexpr int kMessages = 40;
  std::vector<std::string> sent;
  for (int i = 0; i < kMessages; ++i) {
    sent.push_back("m" + std::to_string(i));
    ASSERT_TRUE(pub->Publish(topic + "/d" + std::to_string(i % 4), sent.back(), 1).ok());
  }
  ASSERT_TRUE(WaitUntil([&] { return inbox_a.size() + inbox_b.size() >= kMessages; }, kTimeout))
      << inbox_a.size() << " + " << inbox_b.size();
  std::vector<std::string> received = inbox_a.payloads();
  for (auto& p : inbox_b.payloads()) {
    received.push_back(p);
  }
  EXPECT_THAT(received, UnorderedElementsAreArray(sent));  // Each exactly once overall.
  EXPECT_GT(inbox_a.size(), 0U);
  EXPECT_GT(inbox_b.size(), 0U);
}

TEST(MqttClientTest, BrokerRestartReconnectsAndResubscribes) {
  iot::testing::TestMosquitto broker;
  const std::string topic = Unique("t/restart");
  Inbox inbox;
  std::atomic<int> ups{0};
  std::atomic<int> downs{0};
  auto sub = MakeClient({.url = broker.Url()}, &inbox);
  auto pub = MakeClient({.url = broker.Url()});
  sub->SetConnectionHandler([&](bool up) { ++(up ? ups : downs); });
  ASSERT_TRUE(sub->Subscribe(topic, 1).ok());
  ASSERT_TRUE(sub->Start().ok());
  ASSERT_TRUE(pub->Start().ok());
  ASSERT_TRUE(sub->WaitSubscribed(kTimeout));
  ASSERT_TRUE(pub->WaitConnected(kTimeout));
  ASSERT_TRUE(pub->Publish(topic, "before", 1).ok());
  ASSERT_TRUE(WaitUntil([&] { return inbox.size() == 1; }, kTimeout));

  broker.Stop();
  ASSERT_TRUE(WaitUntil([&] { return !sub->connected() && !pub->connected(); }, kTimeout));
  const absl::Status down = pub->Publish(topic, "while down", 1);
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  EXPECT_EQ(downs.load(), 1);

  broker.Start();  // Same port, no persistence: the session and subscriptions are gone.
  ASSERT_TRUE(sub->WaitSubscribed(kTimeout));
  ASSERT_TRUE(pub->WaitConnected(kTimeout));
  ASSERT_TRUE(pub->Publish(topic, "after", 1).ok());
  ASSERT_TRUE(WaitUntil([&] { return inbox.size() == 2; }, kTimeout));
  EXPECT_EQ(inbox.payloads().back(), "after");
  EXPECT_EQ(sub->reconnects(), 1U);
  EXPECT_EQ(pub->reconnects(), 1U);
  EXPECT_EQ(ups.load(), 2);
}

TEST(MqttClientTest, BrokerDownAtStartConnectsWhenItComesUp) {
  iot::testing::TestMosquitto broker;
  broker.Stop();
  const std::string topic = Unique("t/late");
  Inbox inbox;
  auto sub = MakeClient({.url = broker.Url()}, &inbox);
  ASSERT_TRUE(sub->Subscribe(topic, 0).ok());
  ASSERT_TRUE(sub->Start().ok());
  // Let the first attempts fail (libmosquitto's own loop would give up after a refused first
  // connect).
  EXPECT_FALSE(sub->WaitConnected(std::chrono::milliseconds(300)));
  const absl::Status down = sub->Publish(topic, "x", 0);
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;

  broker.Start();
  ASSERT_TRUE(sub->WaitSubscribed(kTimeout));
  auto pub = MakeClient({.url = broker.Url()});
  ASSERT_TRUE(pub->Start().ok());
  ASSERT_TRUE(pub->WaitConnected(kTimeout));
  ASSERT_TRUE(pub->Publish(topic, "hello", 0).ok());
  ASSERT_TRUE(WaitUntil([&] { return inbox.size() == 1; }, kTimeout));
  EXPECT_EQ(sub->reconnects(), 0U);  // The first successful connect is not a reconnect.
}

TEST(MqttClientTest, PersistentSessionQueuesWhileStopped) {
  const std::string url = iot::testing::SharedMqttUrl();
  const std::string topic = Unique("t/persist");
  const MqttOptions persistent{.url = url,
                               .client_id = Unique("persistent"),
                               .clean_start = false,
                               .session_expiry_seconds = 300};
  {
    // First run: creates the session and its subscription, then goes away cleanly.
    auto first = MakeClient(persistent);
    ASSERT_TRUE(first->Subscribe(topic, 1).ok());
    ASSERT_TRUE(first->Start().ok());
    ASSERT_TRUE(first->WaitSubscribed(kTimeout));
    first->Stop();
    first->Stop();  // Idempotent.
  }

  // Published while the persistent client is away; an observer proves the broker has them.
  Inbox observed;
  auto observer = MakeClient({.url = url}, &observed);
  ASSERT_TRUE(observer->Subscribe(topic, 1).ok());
  ASSERT_TRUE(observer->Start().ok());
  ASSERT_TRUE(observer->WaitSubscribed(kTimeout));
  auto pub = MakeClient({.url = url});
  ASSERT_TRUE(pub->Start().ok());
  ASSERT_TRUE(pub->WaitConnected(kTimeout));
  std::vector<std::string> sent;
  for (int i = 0; i < 5; ++i) {
    sent.push_back("queued-" + std::to_string(i));
    ASSERT_TRUE(pub->Publish(topic, sent.back(), 1).ok());
  }
  ASSERT_TRUE(WaitUntil([&] { return observed.size() == sent.size(); }, kTimeout));

  // Second run, same client id: the broker delivers what it queued.
  Inbox inbox;
  auto second = MakeClient(persistent, &inbox);
  ASSERT_TRUE(second->Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return inbox.size() >= sent.size(); }, kTimeout)) << inbox.size();
  EXPECT_THAT(inbox.payloads(), UnorderedElementsAreArray(sent));
  for (const auto& m : inbox.messages()) {
    EXPECT_EQ(m.qos, 1);
  }

  // Clean up: a clean-start connect with the same id discards the session on the broker.
  second->Stop();
  auto clean = MakeClient({.url = url, .client_id = persistent.client_id});
  ASSERT_TRUE(clean->Start().ok());
  ASSERT_TRUE(clean->WaitConnected(kTimeout));
}

TEST(MqttClientTest, PublishWhileDisconnectedIsUnavailable) {
  iot::testing::TestMosquitto broker;
  broker.Stop();
  auto client = MakeClient({.url = broker.Url()});
  // Not started at all, then started against a stopped broker.
  EXPECT_EQ(client->Publish("t/x", "p", 0).code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(client->Start().ok());
  EXPECT_EQ(client->Publish("t/x", "p", 1).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(client->connected());
  EXPECT_EQ(client->Start().code(), absl::StatusCode::kFailedPrecondition);
  client->Stop();
  client->Stop();
}

TEST(MqttClientTest, RejectsBadOptionsAndArguments) {
  EXPECT_EQ(MqttClient::Create({.url = "tcp://localhost"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MqttClient::Create({.url = "mqtt://"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MqttClient::Create({.url = "mqtt://localhost", .clean_start = false}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MqttClient::Create({.url = "mqtt://localhost", .keepalive_seconds = 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto client = MqttClient::Create({.url = "mqtt://user:pw@localhost:1"});
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->Subscribe("a/#/b", 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*client)->Subscribe("a/b", 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*client)->Publish("a/b", "p", -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*client)->Subscribe("$share/g/a/+", 1).ok());
}

}  // namespace
}  // namespace iot::common
