// The shipped broker configuration (deploy/mosquitto/mosquitto.conf: its queue limits and
// persistence) across broker restarts. The gateway's partition sessions are persistent MQTT v5
// sessions: what the broker queued for them while they were away must survive a restart of
// the broker, with the messages' v5 properties (uplink carries its message id in a user
// property). A SIGTERM saves everything; a SIGKILL keeps what the last autosave wrote.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot {
namespace {

using std::chrono::seconds;

constexpr char kTopic[] = "iot/up/7/p1_n1/sys/properties/report";
constexpr char kPropertyName[] = "iot-message-id";

/// The delivery and persistence settings of deploy/mosquitto/mosquitto.conf, with the
/// persistence location moved to `dir` (listener, plugin and logging are the test's own).
std::string ShippedSettings(const std::filesystem::path& dir) {
  static const std::set<std::string> kKept = {"max_queued_messages",
                                              "max_queued_bytes",
                                              "queue_qos0_messages",
                                              "max_inflight_messages",
                                              "persistent_client_expiration",
                                              "persistence",
                                              "autosave_interval",
                                              "autosave_on_changes"};
  std::ifstream in(IOT_DEPLOY_DIR "/mosquitto/mosquitto.conf");
  std::string line;
  std::string out;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (kKept.count(key) > 0) {
      out += line + "\n";
    }
  }
  return out + fmt::format("persistence_location {}/\n", dir.string());
}

/// A libmosquitto MQTT v5 client on its own thread, recording what it receives.
class Client {
 public:
  Client(const std::string& id, bool persistent, uint16_t port) : port_(port) {
    mosq_ = mosquitto_new(id.c_str(), !persistent, this);
    mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(mosq_, MOSQ_OPT_RECEIVE_MAXIMUM, 100);
    mosquitto_connect_v5_callback_set(
        mosq_, [](mosquitto*, void* self, int rc, int, const mosquitto_property*) {
          static_cast<Client*>(self)->Update([&](Client& c) { c.connack_ = rc; });
        });
    mosquitto_subscribe_v5_callback_set(
        mosq_, [](mosquitto*, void* self, int, int, const int*, const mosquitto_property*) {
          static_cast<Client*>(self)->Update([](Client& c) { ++c.subacks_; });
        });
    mosquitto_publish_v5_callback_set(
        mosq_, [](mosquitto*, void* self, int, int reason, const mosquitto_property*) {
          static_cast<Client*>(self)->Update(
              [&](Client& c) { ++(reason < 0x80 ? c.acked_ : c.refused_); });
        });
    mosquitto_message_v5_callback_set(
        mosq_, [](mosquitto*, void* self, const mosquitto_message* message,
                  const mosquitto_property* properties) {
          char* name = nullptr;
          char* value = nullptr;
          std::string message_id;
          if (mosquitto_property_read_string_pair(properties, MQTT_PROP_USER_PROPERTY, &name,
                                                  &value, false) != nullptr) {
            message_id = value;
          }
          std::free(name);
          std::free(value);
          const std::string payload(static_cast<const char*>(message->payload),
                                    static_cast<std::size_t>(message->payloadlen));
          static_cast<Client*>(self)->Update(
              [&](Client& c) { c.received_[payload].push_back(message_id); });
        });
    mosquitto_property* connect = nullptr;
    if (persistent) {
      mosquitto_property_add_int32(&connect, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 3600);
    }
    EXPECT_EQ(mosquitto_connect_bind_v5(mosq_, "127.0.0.1", port_, 30, nullptr, connect),
              MOSQ_ERR_SUCCESS);
    mosquitto_property_free_all(&connect);
    mosquitto_loop_start(mosq_);
  }

  ~Client() {
    mosquitto_disconnect_v5(mosq_, 0, nullptr);
    mosquitto_loop_stop(mosq_, false);
    mosquitto_destroy(mosq_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool WaitConnected() {
    return Wait([](const Client& c) { return c.connack_ == 0; });
  }
  void Subscribe(const std::string& filter) {
    ASSERT_EQ(mosquitto_subscribe_v5(mosq_, nullptr, filter.c_str(), 1, 0, nullptr),
              MOSQ_ERR_SUCCESS);
    ASSERT_TRUE(Wait([](const Client& c) { return c.subacks_ > 0; }));
  }
  /// Publishes `count` QoS 1 messages "{first}".."{first + count - 1}", each with the user
  /// property iot-message-id = "m-{k}", and waits for every PUBACK.
  void PublishNumbered(int first, int count) {
    const int answered = acked() + refused();
    for (int k = first; k < first + count; ++k) {
      const std::string payload = std::to_string(k);
      const std::string id = fmt::format("m-{}", k);
      mosquitto_property* properties = nullptr;
      mosquitto_property_add_string_pair(&properties, MQTT_PROP_USER_PROPERTY, kPropertyName,
                                         id.c_str());
      ASSERT_EQ(mosquitto_publish_v5(mosq_, nullptr, kTopic, static_cast<int>(payload.size()),
                                     payload.data(), 1, false, properties),
                MOSQ_ERR_SUCCESS);
      mosquitto_property_free_all(&properties);
    }
    ASSERT_TRUE(Wait([&](const Client& c) { return c.acked_ + c.refused_ >= answered + count; }));
    ASSERT_EQ(refused(), 0);
  }

  /// Every message received so far: payload -> the user properties it came with.
  std::map<std::string, std::vector<std::string>> received() {
    const std::lock_guard lock(mutex_);
    return received_;
  }
  bool WaitReceived(std::size_t distinct) {
    return Wait([&](const Client& c) { return c.received_.size() >= distinct; });
  }
  int acked() {
    const std::lock_guard lock(mutex_);
    return acked_;
  }
  int refused() {
    const std::lock_guard lock(mutex_);
    return refused_;
  }

 private:
  template <typename Fn>
  void Update(Fn&& fn) {
    const std::lock_guard lock(mutex_);
    fn(*this);
    changed_.notify_all();
  }
  template <typename Pred>
  bool Wait(Pred&& pred) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, seconds(60), [&] { return pred(*this); });
  }

  uint16_t port_;
  mosquitto* mosq_ = nullptr;
  std::mutex mutex_;
  std::condition_variable changed_;
  int connack_ = -1;
  int subacks_ = 0;
  int acked_ = 0;
  int refused_ = 0;
  std::map<std::string, std::vector<std::string>> received_;
};

class BrokerRestartTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { mosquitto_lib_init(); }
  static void TearDownTestSuite() { mosquitto_lib_cleanup(); }

  BrokerRestartTest() : broker_(ShippedSettings(data_.path())) {}

  /// A persistent session (the gateway's, as it is while its replica restarts) subscribed to
  /// the uplink topic, then gone; `count` messages published for it and acknowledged.
  void QueueForAbsentSession(int count) {
    {
      Client session("gateway-p7", /*persistent=*/true, broker_.port());
      ASSERT_TRUE(session.WaitConnected());
      session.Subscribe("iot/up/7/#");
    }
    Client device("publisher", /*persistent=*/false, broker_.port());
    ASSERT_TRUE(device.WaitConnected());
    device.PublishNumbered(0, count);
  }

  /// The session comes back (without subscribing again) and gets every message once, each with
  /// its own user property.
  void ExpectSessionGetsAll(int count) {
    Client session("gateway-p7", /*persistent=*/true, broker_.port());
    ASSERT_TRUE(session.WaitConnected());
    EXPECT_TRUE(session.WaitReceived(static_cast<std::size_t>(count)))
        << session.received().size() << " of " << count << " received";
    const auto received = session.received();
    EXPECT_EQ(received.size(), static_cast<std::size_t>(count));
    for (const auto& [payload, ids] : received) {
      ASSERT_EQ(ids.size(), 1U) << payload << " delivered " << ids.size() << " times";
      EXPECT_EQ(ids[0], "m-" + payload) << "the user property of message " << payload;
    }
  }

  iot::testing::TempDir data_{"iot-broker-data"};
  iot::testing::TestMosquitto broker_;
};

TEST_F(BrokerRestartTest, ShippedConfigurationPersistsAndSavesByTime) {
  const std::string settings = ShippedSettings(data_.path());
  EXPECT_NE(settings.find("\npersistence true\n"), std::string::npos) << settings;
  // Saved by time: autosave_on_changes counts only queued messages, so a consumer that keeps
  // up (messages in flight, never queued) would never be saved.
  EXPECT_EQ(settings.find("autosave_on_changes true"), std::string::npos) << settings;
  EXPECT_NE(settings.find("autosave_interval "), std::string::npos) << settings;
}

TEST_F(BrokerRestartTest, QueuedMessagesAndTheirPropertiesSurviveASigtermRestart) {
  constexpr int kMessages = 2000;
  QueueForAbsentSession(kMessages);
  broker_.Stop();  // SIGTERM: mosquitto writes its database before it exits
  broker_.Start();
  ExpectSessionGetsAll(kMessages);
}

TEST_F(BrokerRestartTest, WhatTheLastAutosaveWroteSurvivesASigkill) {
  constexpr int kMessages = 2000;
  const auto db = data_.path() / "mosquitto.db";
  QueueForAbsentSession(kMessages);
  // Everything is acknowledged: the next autosave (autosave_interval) writes it. Wait for a
  // save that started after the last PUBACK, then kill the broker.
  const auto acknowledged = std::filesystem::file_time_type::clock::now();
  ASSERT_TRUE(iot::testing::WaitUntil(
      [&] {
        std::error_code ec;
        return std::filesystem::last_write_time(db, ec) > acknowledged + seconds(1) && !ec;
      },
      seconds(60)))
      << "no autosave within 60 s";
  broker_.Kill();
  broker_.Start();
  ExpectSessionGetsAll(kMessages);
}

}  // namespace
}  // namespace iot
