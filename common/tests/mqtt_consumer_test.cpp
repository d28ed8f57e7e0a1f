// MqttConsumer against a fake broker on a loopback socket: what it writes and when.
#include "iot/common/mqtt_consumer.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "consumer_test_support.h"
#include "iot/testing/process.h"

namespace iot::common {
namespace {

using ::iot::common::consumer_test::ListenOnLoopback;
using ::iot::common::consumer_test::Received;
using ::iot::testing::WaitUntil;
using ::testing::ElementsAre;
using namespace std::chrono_literals;

/// Accepts one connection at a time and speaks just enough MQTT v5 to a subscriber.
class FakeBroker {
 public:
  FakeBroker() {
    listen_fd_ = ListenOnLoopback(port_);
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeBroker() {
    stopping_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    Drop();
    thread_.join();
    ::close(listen_fd_);
  }

  [[nodiscard]] std::string Url() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }

  void Publish(uint16_t packet_id, const std::string& payload) {
    Send(mqtt::EncodePublish({.topic = "iot/up/0/p1_a/sys/messages/up",
                              .payload = payload,
                              .qos = 1,
                              .retain = false,
                              .dup = false,
                              .packet_id = packet_id,
                              .user_properties = {{"iot-message-id", "id-" + payload}}}));
  }
  /// Closes the current connection as a dying broker would (no DISCONNECT).
  void Drop() {
    std::lock_guard lock(mu_);
    if (client_fd_ >= 0) {
      ::shutdown(client_fd_, SHUT_RDWR);
    }
  }

  std::atomic<bool> answer_pings{true};

  [[nodiscard]] int connects() const { return connects_.load(); }
  [[nodiscard]] int pings() const { return pings_.load(); }
  std::vector<uint16_t> pubacks() const {
    std::lock_guard lock(mu_);
    return pubacks_;
  }
  mqtt::ConnectPacket last_connect() const {
    std::lock_guard lock(mu_);
    return connect_;
  }
  mqtt::SubscribePacket last_subscribe() const {
    std::lock_guard lock(mu_);
    return subscribe_;
  }

 private:
  void Send(const std::string& bytes) {
    std::lock_guard lock(mu_);
    if (client_fd_ >= 0) {
      (void)::send(client_fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    }
  }

  void Run() {
    while (!stopping_) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        return;
      }
      {
        std::lock_guard lock(mu_);
        client_fd_ = fd;
      }
      Serve(fd);
      {
        std::lock_guard lock(mu_);
        client_fd_ = -1;
      }
      ::close(fd);
    }
  }

  void Serve(int fd) {
    mqtt::PacketReader reader;
    std::array<char, 4096> buffer{};
    while (true) {
      const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) {
        return;
      }
      reader.Append(std::string_view(buffer.data(), static_cast<size_t>(n)));
      while (true) {
        auto packet = reader.Next();
        if (!packet.ok() || !packet->has_value()) {
          break;
        }
        const auto& p = **packet;
        switch (p.type) {
          case mqtt::PacketType::kConnect: {
            auto connect = mqtt::DecodeConnect(p.body);
            {
              std::lock_guard lock(mu_);
              connect_ = connect.value_or(mqtt::ConnectPacket{});
            }
            ++connects_;
            Send(mqtt::EncodeConnack({.session_present = connects_ > 1,
                                      .reason = 0,
                                      .server_keepalive = {},
                                      .receive_maximum = {},
                                      .assigned_client_id = {},
                                      .reason_string = {}}));
            break;
          }
          case mqtt::PacketType::kSubscribe: {
            auto subscribe = mqtt::DecodeSubscribe(p.body);
            std::vector<uint8_t> granted(subscribe.ok() ? subscribe->subscriptions.size() : 0, 1);
            {
              std::lock_guard lock(mu_);
              subscribe_ = subscribe.value_or(mqtt::SubscribePacket{});
            }
            Send(mqtt::EncodeSuback({.packet_id = subscribe->packet_id, .reasons = granted}));
            break;
          }
          case mqtt::PacketType::kPuback: {
            auto puback = mqtt::DecodePuback(p.body);
            std::lock_guard lock(mu_);
            pubacks_.push_back(puback.ok() ? puback->first : 0);
            break;
          }
          case mqtt::PacketType::kPingreq:
            ++pings_;
            if (answer_pings) {
              Send(mqtt::EncodePingresp());
            }
            break;
          default:
            break;
        }
      }
    }
  }

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connects_{0};
  std::atomic<int> pings_{0};
  mutable std::mutex mu_;
  int client_fd_ = -1;
  std::vector<uint16_t> pubacks_;
  mqtt::ConnectPacket connect_;
  mqtt::SubscribePacket subscribe_;
};

std::shared_ptr<MqttConsumer> Start(const FakeBroker& broker, Received& received,
                                    uint16_t keepalive = 30) {
  auto consumer = MqttConsumer::Create(
      {.url = broker.Url(),
       .client_id = "gw-p0",
       .username = "gateway",
       .password = "pw",
       .session_expiry_seconds = 3600,
       .keepalive_seconds = keepalive,
       .receive_maximum = 64,
       .subscriptions = {{.filter = "iot/up/0/#", .qos = 1, .retain_handling = 2}},
       .tls_ca_file = {},
       .connect_timeout = 5s,
       .reconnect_initial = 10ms,
       .reconnect_max = 50ms});
  EXPECT_TRUE(consumer.ok()) << consumer.status();
  (*consumer)->SetHandler(received.Handler());
  EXPECT_TRUE((*consumer)->Start().ok());
  EXPECT_TRUE((*consumer)->WaitSubscribed(5s));
  return *consumer;
}

TEST(MqttConsumerTest, AcknowledgesOnlyWhatTheApplicationFinishedInReceiveOrder) {
  FakeBroker broker;
  Received received;
  auto consumer = Start(broker, received);
  const auto connect = broker.last_connect();
  EXPECT_EQ(connect.client_id, "gw-p0");
  EXPECT_FALSE(connect.clean_start);
  EXPECT_EQ(connect.session_expiry_seconds, 3600U);
  EXPECT_EQ(connect.receive_maximum, 64);
  EXPECT_EQ(connect.username, "gateway");
  ASSERT_EQ(broker.last_subscribe().subscriptions.size(), 1U);
  EXPECT_EQ(broker.last_subscribe().subscriptions[0].retain_handling, 2);

  for (uint16_t id = 1; id <= 3; ++id) {
    broker.Publish(id, std::to_string(id));
  }
  ASSERT_TRUE(WaitUntil([&] { return received.size() == 3; }, 5s));
  const auto deliveries = received.deliveries();
  EXPECT_EQ(*deliveries[0].UserProperty("iot-message-id"), "id-1");
  consumer->Ack(deliveries[2].token);
  consumer->Ack(deliveries[1].token);
  EXPECT_FALSE(WaitUntil([&] { return !broker.pubacks().empty(); }, 200ms));
  EXPECT_EQ(consumer->unacknowledged(), 3U);
  consumer->Ack(deliveries[0].token);
  ASSERT_TRUE(WaitUntil([&] { return broker.pubacks().size() == 3; }, 5s));
  EXPECT_THAT(broker.pubacks(), ElementsAre(1, 2, 3));
  EXPECT_EQ(consumer->unacknowledged(), 0U);
}

TEST(MqttConsumerTest, PingsOnItsOwnTimerWhileTheApplicationHoldsMessages) {
  FakeBroker broker;
  Received received;
  auto consumer = Start(broker, received, /*keepalive=*/2);
  broker.Publish(1, "held");
  ASSERT_TRUE(WaitUntil([&] { return received.size() == 1; }, 5s));
  // Never acknowledged: the session must stay alive anyway (a PINGREQ every half keepalive).
  ASSERT_TRUE(WaitUntil([&] { return broker.pings() >= 3; }, 10s));
  EXPECT_EQ(broker.connects(), 1);
  EXPECT_TRUE(consumer->connected());
  consumer->Ack(received.deliveries()[0].token);
  EXPECT_TRUE(WaitUntil([&] { return broker.pubacks().size() == 1; }, 5s));
}

TEST(MqttConsumerTest, ABrokerThatStopsAnsweringIsLeftAndConnectedAgain) {
  FakeBroker broker;
  Received received;
  auto consumer = Start(broker, received, /*keepalive=*/1);
  broker.answer_pings = false;
  ASSERT_TRUE(WaitUntil([&] { return broker.connects() >= 2; }, 10s));
  broker.answer_pings = true;
  EXPECT_TRUE(consumer->WaitSubscribed(5s));
  EXPECT_GE(consumer->reconnects(), 1U);
}

TEST(MqttConsumerTest, ALostConnectionsMessagesAreFinishedBeforeItConnectsAgain) {
  FakeBroker broker;
  Received received;
  auto consumer = Start(broker, received);
  broker.Publish(7, "a");
  broker.Publish(8, "b");
  ASSERT_TRUE(WaitUntil([&] { return received.size() == 2; }, 5s));
  broker.Drop();
  ASSERT_TRUE(WaitUntil([&] { return !consumer->connected(); }, 5s));
  // The broker sends both again to the next connection: until the application is done with
  // these copies, the consumer stays away (it never holds more than its Receive Maximum).
  EXPECT_FALSE(WaitUntil([&] { return broker.connects() > 1; }, 300ms));
  for (const auto& delivery : received.deliveries()) {
    consumer->Ack(delivery.token);
  }
  ASSERT_TRUE(WaitUntil([&] { return broker.connects() == 2; }, 5s));
  EXPECT_TRUE(consumer->WaitSubscribed(5s));
  EXPECT_TRUE(broker.pubacks().empty());  // acknowledgements of a lost connection are moot
  EXPECT_EQ(consumer->unacknowledged(), 0U);
}

TEST(MqttConsumerTest, APausedConsumerTakesNothingMoreAndDrainsOnceAcknowledged) {
  FakeBroker broker;
  Received received;
  auto consumer = Start(broker, received);
  broker.Publish(1, "taken");
  ASSERT_TRUE(WaitUntil([&] { return received.size() == 1; }, 5s));
  consumer->Pause();
  broker.Publish(2, "left for the next holder");
  EXPECT_FALSE(consumer->WaitDrained(200ms));
  consumer->Ack(received.deliveries()[0].token);
  EXPECT_TRUE(consumer->WaitDrained(5s));  // the PUBACK is written
  EXPECT_TRUE(WaitUntil([&] { return !broker.pubacks().empty(); }, 5s));
  consumer->Stop();
  EXPECT_FALSE(WaitUntil([&] { return broker.pubacks().size() > 1; }, 100ms));
  EXPECT_THAT(broker.pubacks(), ElementsAre(1));  // message 2 stays with the broker
  EXPECT_EQ(received.size(), 1U);
}

}  // namespace
}  // namespace iot::common
