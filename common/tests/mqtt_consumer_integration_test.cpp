// MqttConsumer against a real Mosquitto: what the broker delivers again, and TLS.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "consumer_test_support.h"
#include "iot/common/mqtt.h"
#include "iot/common/mqtt_consumer.h"
#include "iot/common/url.h"
#include "iot/testing/pki.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot::common {
namespace {

using ::iot::common::consumer_test::ListenOnLoopback;
using ::iot::common::consumer_test::Received;
using ::iot::testing::WaitUntil;
using ::testing::ElementsAreArray;
using namespace std::chrono_literals;

constexpr auto kTimeout = 20s;

std::string Unique(const std::string& name) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t run = std::random_device{}();
  return name + "-" + std::to_string(run) + "-" + std::to_string(++counter);
}

/// A TCP proxy between one client and the broker that can be cut as a killed process's
/// connection is (no DISCONNECT), and that counts the MQTT packets it forwarded.
class CuttableProxy {
 public:
  explicit CuttableProxy(uint16_t upstream_port) : upstream_port_(upstream_port) {
    listen_fd_ = ListenOnLoopback(port_);
    thread_ = std::thread([this] { Run(); });
  }
  ~CuttableProxy() {
    Cut();
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  [[nodiscard]] uint16_t port() const { return port_; }
  void Cut() { cut_ = true; }

  std::atomic<int> pubacks_up{0};
  std::atomic<int> pingreqs_up{0};
  std::atomic<int> pingresps_down{0};

 private:
  void Count(mqtt::PacketReader& reader, std::string_view bytes, bool up) {
    reader.Append(bytes);
    while (true) {
      auto packet = reader.Next();
      if (!packet.ok() || !packet->has_value()) {
        return;
      }
      const auto type = (*packet)->type;
      if (up && type == mqtt::PacketType::kPuback) {
        ++pubacks_up;
      } else if (up && type == mqtt::PacketType::kPingreq) {
        ++pingreqs_up;
      } else if (!up && type == mqtt::PacketType::kPingresp) {
        ++pingresps_down;
      }
    }
  }

  void Run() {
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      return;
    }
    const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(upstream_port_);
    if (::connect(upstream, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
      mqtt::PacketReader up;
      mqtt::PacketReader down;
      std::array<char, 16 * 1024> buffer{};
      while (!cut_) {
        std::array<pollfd, 2> fds{pollfd{client, POLLIN, 0}, pollfd{upstream, POLLIN, 0}};
        if (::poll(fds.data(), fds.size(), 50) < 0) {
          break;
        }
        bool closed = false;
        for (int i = 0; i < 2 && !closed; ++i) {
          if (fds[static_cast<size_t>(i)].revents == 0) {
            continue;
          }
          const int from = i == 0 ? client : upstream;
          const int to = i == 0 ? upstream : client;
          const ssize_t n = ::recv(from, buffer.data(), buffer.size(), 0);
          if (n <= 0) {
            closed = true;
            break;
          }
          const std::string_view bytes(buffer.data(), static_cast<size_t>(n));
          (void)::send(to, bytes.data(), bytes.size(), MSG_NOSIGNAL);
          Count(i == 0 ? up : down, bytes, i == 0);
        }
        if (closed) {
          break;
        }
      }
    }
    ::close(upstream);
    ::close(client);
  }

  const uint16_t upstream_port_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> cut_{false};
  std::thread thread_;
};

/// The shared broker's credentials (its URL's), for a URL that names another port.
struct Credentials {
  std::string username;
  std::string password;
};

std::shared_ptr<MqttConsumer> StartConsumer(const std::string& url, const std::string& client_id,
                                            const std::string& filter, Received& received,
                                            uint16_t keepalive = 30,
                                            const std::string& ca_file = {},
                                            const Credentials& credentials = {}) {
  auto consumer = MqttConsumer::Create({.url = url,
                                        .client_id = client_id,
                                        .username = credentials.username,
                                        .password = credentials.password,
                                        .session_expiry_seconds = 600,
                                        .keepalive_seconds = keepalive,
                                        .receive_maximum = 100,
                                        .subscriptions = {{.filter = filter, .qos = 1}},
                                        .tls_ca_file = ca_file,
                                        .connect_timeout = 5s,
                                        .reconnect_initial = 50ms,
                                        .reconnect_max = 500ms});
  EXPECT_TRUE(consumer.ok()) << consumer.status();
  if (!consumer.ok()) {
    return nullptr;
  }
  (*consumer)->SetHandler(received.Handler());
  EXPECT_TRUE((*consumer)->Start().ok());
  return *consumer;
}

void PublishNumbered(const std::string& url, const std::string& topic, int from, int to) {
  auto publisher = MqttClient::Create({.url = url, .client_id = Unique("pub")});
  ASSERT_TRUE(publisher.ok());
  ASSERT_TRUE((*publisher)->Start().ok());
  ASSERT_TRUE((*publisher)->WaitConnected(kTimeout));
  for (int i = from; i < to; ++i) {
    auto rc = (*publisher)->PublishAndWait(topic, std::to_string(i), 1, kTimeout);
    ASSERT_TRUE(rc.ok()) << rc.status();
    ASSERT_EQ(*rc, 0);
  }
}

std::vector<std::string> Numbers(int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) {
    out.push_back(std::to_string(i));
  }
  return out;
}

TEST(MqttConsumerBrokerTest, AStoppedConsumersUnacknowledgedMessagesGoToTheNextConnection) {
  const std::string url = iot::testing::SharedMqttUrl();
  const std::string topic = Unique("t/redeliver");
  const std::string client_id = Unique("consumer");
  {
    Received first;
    auto consumer = StartConsumer(url, client_id, topic, first);
    ASSERT_TRUE(consumer->WaitSubscribed(kTimeout));
    PublishNumbered(url, topic, 0, 10);
    ASSERT_TRUE(WaitUntil([&] { return first.size() == 10; }, kTimeout));
    const auto deliveries = first.deliveries();
    for (size_t i = 0; i < 4; ++i) {
      consumer->Ack(deliveries[i].token);
    }
    consumer->Ack(deliveries[7].token);  // out of order: its PUBACK must wait for 4..6
    ASSERT_TRUE(WaitUntil([&] { return consumer->unacknowledged() == 6; }, kTimeout));
    consumer->Stop();  // DISCONNECT: the broker keeps the session
  }
  Received second;
  auto consumer = StartConsumer(url, client_id, topic, second);
  ASSERT_TRUE(WaitUntil([&] { return second.size() == 6; }, kTimeout));
  EXPECT_THAT(second.payloads(), ElementsAreArray(Numbers(4, 10)));
  for (const auto& delivery : second.deliveries()) {
    EXPECT_TRUE(delivery.dup) << delivery.payload;
    consumer->Ack(delivery.token);
  }
  PublishNumbered(url, topic, 10, 12);
  ASSERT_TRUE(WaitUntil([&] { return second.size() == 8; }, kTimeout));
  EXPECT_FALSE(second.deliveries()[7].dup);
}

TEST(MqttConsumerBrokerTest, AKilledConsumersUnacknowledgedMessagesComeAgainAcknowledgedOnesDoNot) {
  const std::string url = iot::testing::SharedMqttUrl();
  auto parsed = ParseUrl(url, 1883);
  ASSERT_TRUE(parsed.ok());
  const std::string topic = Unique("t/killed");
  const std::string client_id = Unique("consumer");
  {
    CuttableProxy proxy(parsed->port);
    Received first;
    // Keepalive 3 s: a PINGREQ every 1.5 s, which tells when the broker has read the PUBACKs
    // written before it (and slack for a busy machine's PINGRESP).
    auto consumer = StartConsumer(
        fmt::format("mqtt://127.0.0.1:{}", proxy.port()), client_id, topic, first,
        /*keepalive=*/3, {}, {.username = parsed->user, .password = parsed->password});
    ASSERT_TRUE(consumer->WaitSubscribed(kTimeout));
    PublishNumbered(url, topic, 0, 10);
    ASSERT_TRUE(WaitUntil([&] { return first.size() == 10; }, kTimeout));
    const auto deliveries = first.deliveries();
    for (size_t i = 0; i < 3; ++i) {
      consumer->Ack(deliveries[i].token);
    }
    ASSERT_TRUE(WaitUntil([&] { return proxy.pubacks_up == 3; }, kTimeout));
    const int pings = proxy.pingreqs_up;
    ASSERT_TRUE(WaitUntil([&] { return proxy.pingresps_down > pings; }, kTimeout));
    // As SIGKILL leaves it: the connection closes with no DISCONNECT.
    proxy.Cut();
    ASSERT_TRUE(WaitUntil([&] { return !consumer->connected(); }, kTimeout));
    consumer->Stop();
  }
  Received second;
  auto consumer = StartConsumer(url, client_id, topic, second);
  ASSERT_TRUE(WaitUntil([&] { return second.size() == 7; }, kTimeout));
  EXPECT_FALSE(WaitUntil([&] { return second.size() > 7; }, 300ms));
  EXPECT_THAT(second.payloads(), ElementsAreArray(Numbers(3, 10)));
}

TEST(MqttConsumerBrokerTest, HoldsNoMoreThanItsReceiveMaximumThoughMosquittoWouldSendMore) {
  // Mosquitto 2.0.11 moves up to Receive Maximum queued messages into flight on every PUBACK of
  // the oldest one: the consumer keeps the bound itself.
  const std::string url = iot::testing::SharedMqttUrl();
  const std::string topic = Unique("t/window");
  Received got;
  auto consumer = StartConsumer(url, Unique("window"), topic, got);  // Receive Maximum 100
  ASSERT_TRUE(consumer->WaitSubscribed(kTimeout));
  PublishNumbered(url, topic, 0, 300);
  ASSERT_TRUE(WaitUntil([&] { return got.size() == 100; }, kTimeout));
  EXPECT_FALSE(WaitUntil([&] { return got.size() > 100; }, 300ms));
  consumer->Ack(got.deliveries()[0].token);
  ASSERT_TRUE(WaitUntil([&] { return got.size() == 101; }, kTimeout));
  EXPECT_FALSE(WaitUntil([&] { return got.size() > 101; }, 300ms));  // 2.0.11 sends up to 199
  EXPECT_EQ(consumer->unacknowledged(), 100U);
  // Acknowledged in order as they come: everything arrives, never more than 100 held.
  size_t acked = 1;
  while (acked < 300 && WaitUntil([&] { return got.size() > acked; }, kTimeout)) {
    const auto deliveries = got.deliveries();
    EXPECT_LE(deliveries.size() - acked, 100U);
    for (; acked < deliveries.size(); ++acked) {
      consumer->Ack(deliveries[acked].token);
    }
  }
  EXPECT_THAT(got.payloads(), ElementsAreArray(Numbers(0, 300)));
}

TEST(MqttConsumerBrokerTest, ConsumesOverTlsWithTheGivenCaAndRefusesAnUnknownServer) {
  iot::testing::TestPki pki;
  const uint16_t tls_port = iot::testing::FreePort();
  iot::testing::TestMosquitto broker(fmt::format("listener {} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                                                 tls_port, pki.Path("server.crt"),
                                                 pki.Path("server.key")));
  ASSERT_TRUE(iot::testing::WaitForPort(tls_port, kTimeout));
  const std::string tls_url = fmt::format("mqtts://127.0.0.1:{}", tls_port);
  {
    // The system's trust store does not know the test CA: the handshake fails.
    Received none;
    auto untrusting = StartConsumer(tls_url, Unique("untrusting"), "t/tls", none);
    EXPECT_FALSE(untrusting->WaitSubscribed(2s));
  }
  Received received;
  auto consumer = StartConsumer(tls_url, Unique("tls"), "t/tls", received, 30, pki.Path("ca.crt"));
  ASSERT_TRUE(consumer->WaitSubscribed(kTimeout));
  PublishNumbered(broker.Url(), "t/tls", 0, 3);
  ASSERT_TRUE(WaitUntil([&] { return received.size() == 3; }, kTimeout));
  for (const auto& delivery : received.deliveries()) {
    consumer->Ack(delivery.token);
  }
  EXPECT_TRUE(WaitUntil([&] { return consumer->unacknowledged() == 0; }, kTimeout));
}

}  // namespace
}  // namespace iot::common
