#pragma once

// A small synchronous MQTT client over libmosquitto for the plugin tests: unlike
// iot::common::MqttClient it never reconnects, and it exposes CONNACK, PUBACK and SUBACK codes.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

struct mosquitto;

namespace iot::broker_test {

using UserProperties = std::vector<std::pair<std::string, std::string>>;

struct ReceivedMessage {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  UserProperties user_properties{};  ///< MQTT v5

  /// The value of user property `name` ("" when absent).
  [[nodiscard]] std::string Property(const std::string& name) const;
};

class TestClient {
 public:
  struct Options {
    uint16_t port = 0;
    std::string client_id{};
    std::optional<std::string> username{};
    std::optional<std::string> password{};
    /// 5 for MQTT v5, else 3.1.1.
    int protocol = 4;
    bool clean_session = true;
    /// TLS: CA file, and client certificate/key (empty: none).
    std::string ca_file{};
    std::string cert_file{};
    std::string key_file{};
    /// A will, when `will_topic` is not empty.
    std::string will_topic{};
    std::string will_payload{};
    int will_qos = 1;
    bool will_retain = false;
    /// Local address to connect from (e.g. 127.0.0.2: another source address); empty: any.
    std::string bind_address{};
  };

  static constexpr int kTimedOut = -1;

  explicit TestClient(Options options);
  ~TestClient();
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;

  /// Connects and waits for the CONNACK: its return/reason code (0 accepted), or kTimedOut
  /// (also when the broker closed the connection without one).
  int Connect(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Publishes; for QoS > 0 waits for the PUBACK and returns its reason code (v5; 0 for
  /// v3.1.1), for QoS 0 returns 0 once queued. kTimedOut on timeout or connection loss.
  int Publish(const std::string& topic, const std::string& payload, int qos,
              std::chrono::milliseconds timeout = std::chrono::seconds(10),
              const UserProperties& properties = {}, bool retain = false);
  /// Subscribes and returns the granted QoS or failure code of the SUBACK (0x80 in v3.1.1,
  /// a v5 reason code such as 0x87), or kTimedOut.
  int Subscribe(const std::string& filter, int qos,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Sends DISCONNECT and stops the network thread.
  void Disconnect();
  /// Closes the connection without DISCONNECT, as a device that loses power: the broker sends
  /// its will.
  void Drop();

  [[nodiscard]] bool connected() const;
  /// True once the connection is gone (kicked, closed), false after `timeout`.
  bool WaitDisconnected(std::chrono::milliseconds timeout);
  /// True once a message satisfying `predicate` has been received.
  bool WaitForMessage(const std::function<bool(const ReceivedMessage&)>& predicate,
                      std::chrono::milliseconds timeout);
  /// True once at least `count` messages have been received.
  bool WaitForCount(size_t count, std::chrono::milliseconds timeout);
  [[nodiscard]] std::vector<ReceivedMessage> messages() const;
  /// Messages received on `topic`.
  [[nodiscard]] std::vector<ReceivedMessage> messages_on(const std::string& topic) const;

 private:
  friend struct TestClientCallbacks;

  void Run();
  void StopThread();

  const Options options_;
  struct mosquitto* mosq_ = nullptr;
  std::thread thread_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool stop_ = false;
  bool connected_ = false;
  bool closed_ = false;
  std::optional<int> connack_;
  std::map<int, int> acks_;  ///< mid -> PUBACK reason code or first SUBACK code.
  std::vector<ReceivedMessage> messages_;
};

}  // namespace iot::broker_test
