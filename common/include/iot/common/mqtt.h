#pragma once

// A thread-safe MQTT v5 client over libmosquitto that keeps itself connected.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct mosquitto;

namespace iot::common {

struct MqttOptions {
  /// `mqtt://[user[:password]@]host[:port]` (port 1883) or `mqtts://...` (TLS, port 8883).
  std::string url{};
  /// Empty: the broker assigns one (only with clean_start).
  std::string client_id{};
  /// Override the URL's user and password when not empty.
  std::string username{};
  std::string password{};
  bool clean_start = true;
  /// Sent as the CONNECT Session Expiry Interval when > 0. With clean_start = false this gives
  /// a persistent session: the broker keeps subscriptions and queues QoS 1/2 messages while
  /// the client is away, for this long.
  uint32_t session_expiry_seconds = 0;
  int keepalive_seconds = 30;
  /// Most QoS 1/2 messages in flight each way (MQTT5 Receive Maximum and send quota).
  int max_inflight = 100;
  /// `mqtts://`: PEM file of the CAs to trust; empty: the system's (/etc/ssl/certs).
  std::string tls_ca_file{};
};

struct MqttMessage {
  std::string topic{};
  std::string payload{};
  int qos = 0;
  bool retain = false;
};

/// Thread-safe MQTT v5 client. Start() returns at once; a network thread owned by the client
/// connects, and reconnects after any loss with backoff (100 ms doubling to 10 s), forever,
/// including when the broker is down at start or refuses the credentials. On every (re)connect
/// it subscribes again to every filter passed to Subscribe(), so plain and shared
/// (`$share/group/filter`) subscriptions survive broker restarts.
///
/// Handlers and callbacks run on the network thread: keep them short, and never call Stop()
/// or destroy the client from one. Publish() and Subscribe() may be called from them.
///
/// A QoS 1 PUBACK is written only after the message handler returns (libmosquitto queues it
/// first, and only the network thread writes): a process that dies inside the handler leaves
/// the message unacknowledged for the broker to redeliver. A slow handler stops reading, which
/// is the backpressure: nothing is buffered between the socket and the handler.
class MqttClient {
 public:
  using MessageHandler = std::function<void(const MqttMessage&)>;
  /// Called with true on every successful CONNACK and false when that connection is lost.
  using ConnectionHandler = std::function<void(bool connected)>;

  /// Validates the options (URL, client id); never touches the network.
  static absl::StatusOr<std::unique_ptr<MqttClient>> Create(MqttOptions options);
  /// Stop()s.
  ~MqttClient();
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  /// Set before Start().
  void SetMessageHandler(MessageHandler handler);
  void SetConnectionHandler(ConnectionHandler handler);

  /// Starts the network thread. Fails only when called twice (a stopped client stays stopped).
  absl::Status Start();
  /// Disconnects cleanly (a persistent session is kept by the broker) and joins the network
  /// thread. Idempotent; waits at most ~2 s for the DISCONNECT to be written.
  void Stop();

  /// Remembers `filter` and subscribes now if connected, else on the next connect. Safe before
  /// Start(). Subscribing again to a filter replaces its QoS.
  absl::Status Subscribe(const std::string& filter, int qos);
  /// Forgets `filter`; unsubscribes now if connected.
  absl::Status Unsubscribe(const std::string& filter);

  /// Queues `payload` for `topic`. When not connected, returns UNAVAILABLE rather than queueing:
  /// the caller decides whether to retry, buffer (bounded) or stop consuming its own input.
  /// QoS 1/2 messages accepted while connected are resent by libmosquitto after a reconnect.
  absl::Status Publish(const std::string& topic, std::string_view payload, int qos,
                       bool retain = false);

  /// Publishes and waits for the broker's answer. QoS 1/2: the MQTT v5 reason code of the
  /// PUBACK / PUBCOMP (< 0x80 accepted, e.g. 0x10 "no matching subscribers"; >= 0x80 refused,
  /// e.g. 0x87 "not authorized"). QoS 0: 0 once written. UNAVAILABLE when not connected,
  /// DEADLINE_EXCEEDED when no answer came within `timeout` (the message may still arrive:
  /// libmosquitto resends QoS 1/2 after a reconnect). Never call it from a handler.
  absl::StatusOr<int> PublishAndWait(const std::string& topic, std::string_view payload, int qos,
                                     std::chrono::milliseconds timeout);

  [[nodiscard]] bool connected() const;
  /// True once connected, or false after `timeout`.
  bool WaitConnected(std::chrono::milliseconds timeout);
  /// True once connected and every remembered filter has been acknowledged (SUBACK) on this
  /// connection, or false after `timeout`.
  bool WaitSubscribed(std::chrono::milliseconds timeout);
  /// Successful connects after the first one.
  [[nodiscard]] uint64_t reconnects() const { return reconnects_.load(); }
  [[nodiscard]] const MqttOptions& options() const { return options_; }

 private:
  friend struct MqttCallbacks;

  MqttClient(MqttOptions options, std::string host, uint16_t port, std::string username,
             std::string password);

  void Run();
  /// One connect attempt; true when the TCP connection is up and CONNECT queued.
  bool ConnectOnce();
  void MarkDisconnected();
  void WaitBackoff(std::chrono::milliseconds delay);

  // Callbacks from libmosquitto, on the network thread.
  void OnConnect(int reason_code);
  void OnDisconnect(int reason_code);
  void OnSubscribe(int mid, int qos_count, const int* granted_qos);
  void OnMessage(MqttMessage message);
  void OnPublish(int mid, int reason_code);

  const MqttOptions options_;
  const std::string host_;
  const uint16_t port_;
  const std::string username_;
  const std::string password_;
  const std::string masked_url_;

  struct mosquitto* mosq_ = nullptr;
  MessageHandler message_handler_;
  ConnectionHandler connection_handler_;
  std::thread thread_;
  bool connack_ok_ = false;  ///< Network thread only: this connection got a CONNACK success.

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool started_ = false;
  bool stopping_ = false;
  bool connected_ = false;  ///< CONNACK success seen on the current connection.
  bool ever_connected_ = false;
  std::map<std::string, int> subscriptions_;    ///< filter -> QoS.
  std::map<int, std::string> pending_subacks_;  ///< SUBSCRIBE message id -> filter.
  /// PUBLISH message id of a PublishAndWait -> its reason code once acknowledged (-1 before).
  std::map<int, int> awaited_publishes_;
  std::atomic<uint64_t> reconnects_{0};
};

}  // namespace iot::common
