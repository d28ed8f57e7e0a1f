#pragma once

// A small MQTT v5 subscriber that acknowledges a QoS 1 message only when the application says
// so: what a consumer needs to take a message from the broker's persistent session without
// ever holding it in memory alone. libmosquitto 2.0.11 (and Debian's paho.mqtt.c) queue the
// PUBACK before the message handler runs, so a process killed after the handler returned has
// lost the message; here the PUBACK waits for Ack().
//
// - CONNECT with clean start off, a session expiry and a Receive Maximum: the broker keeps the
//   session (subscriptions, queued and unacknowledged messages) while the consumer is away, and
//   should never have more than Receive Maximum unacknowledged QoS 1 messages out to it. That is
//   the backpressure: the handler never blocks, the broker stops sending. Mosquitto 2.0.11 does
//   not quite keep to it: a PUBACK of the oldest message in flight moves up to Receive Maximum
//   queued messages into flight (db__message_delete_outgoing counts only the messages in flight
//   before the acknowledged one), so with in-order acknowledgements it sends ever more. So the
//   consumer enforces the bound itself: it hands the application at most Receive Maximum
//   unacknowledged messages, and while the next one must wait it stops reading the socket (TCP
//   holds the broker back; what was read waits parsed, at most one read's worth).
// - PUBACKs go out in the order the PUBLISHes arrived (MQTT 5 §4.6): the contiguous prefix of
//   acknowledged messages. A message the application finished late holds back the ones after it.
// - One network thread per consumer, poll(2) over the socket and a wake-up eventfd. PINGREQ on
//   its own timer, so the session stays alive however slowly the application acknowledges; a
//   broker that does not answer a PINGREQ within the keepalive is taken as gone.
// - Reconnects with backoff, forever. Messages delivered on a lost connection cannot be
//   acknowledged any more (the broker sends them again, with DUP, on the next connection); the
//   consumer reconnects only once the application acknowledged all of them, so it never holds
//   more than Receive Maximum messages of its session.
// - `mqtt://` and `mqtts://` (TLS through OpenSSL, the system's trust store or a CA file, host
//   name verified).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "iot/common/mqtt_packets.h"

namespace iot::common {

struct MqttConsumerOptions {
  /// `mqtt://[user[:password]@]host[:port]` (1883) or `mqtts://...` (8883).
  std::string url{};
  /// Required: the session's identity.
  std::string client_id{};
  /// Override the URL's user and password when not empty.
  std::string username{};
  std::string password{};
  /// > 0: the broker keeps the session this long while the consumer is away.
  uint32_t session_expiry_seconds = 24 * 3600;
  uint16_t keepalive_seconds = 30;
  /// Most unacknowledged QoS 1 messages the broker sends (MQTT 5 Receive Maximum).
  uint16_t receive_maximum = 256;
  /// Subscribed on every connect.
  std::vector<mqtt::Subscription> subscriptions{};
  /// `mqtts://`: PEM file of the CAs to trust; empty: the system's trust store.
  std::string tls_ca_file{};
  /// TCP connect + TLS handshake + CONNACK.
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{10'000};
};

struct MqttDelivery {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  bool dup = false;
  mqtt::UserProperties user_properties;
  /// Pass to MqttConsumer::Ack() once the message is taken care of; 0 for QoS 0.
  uint64_t token = 0;

  /// The value of the first user property `name`; nullptr when there is none.
  [[nodiscard]] const std::string* UserProperty(std::string_view name) const;
};

/// Which delivered QoS 1 messages the application finished and which PUBACKs may go out: the
/// contiguous prefix, in receive order. Tokens name a message of one connection; a token of an
/// earlier connection is only counted (its message is redelivered). Not thread-safe.
class AckWindow {
 public:
  /// A new connection: what was delivered on the previous one and not yet acknowledged becomes
  /// stale, and what was acknowledged but not yet sent is forgotten.
  void NewConnection();
  /// PUBLISH `packet_id` was delivered to the application; its token. nullopt when that packet
  /// id is already in flight on this connection (not delivered twice).
  std::optional<uint64_t> Deliver(uint16_t packet_id);
  /// The application finished the message of `token`. True when the oldest message in flight
  /// was acknowledged (PUBACKs may be ready).
  bool Ack(uint64_t token);
  /// Appends the packet ids whose PUBACKs may go out now, in receive order, and forgets them.
  void TakeReady(std::vector<uint16_t>& out);

  /// Delivered on this connection and not yet taken by TakeReady().
  [[nodiscard]] size_t in_flight() const { return order_.size(); }
  /// Delivered on earlier connections and not yet acknowledged.
  [[nodiscard]] size_t stale() const { return stale_total_; }

 private:
  enum : uint8_t { kFree = 0, kDelivered = 1, kAcked = 2 };
  uint64_t generation_ = 1;  ///< Tokens are generation << 16 | packet id.
  std::vector<uint8_t> state_ = std::vector<uint8_t>(65536, kFree);
  std::deque<uint16_t> order_;        ///< Packet ids in receive order.
  std::map<uint64_t, size_t> stale_;  ///< generation -> unacknowledged deliveries
  size_t stale_total_ = 0;
};

/// Thread-safe. Create(), SetHandler(), Start(); Ack() from any thread; Pause() and Drained()
/// for a hand-over; Stop().
class MqttConsumer {
 public:
  /// Runs on the network thread: must not block (hand the message on and return).
  using Handler = std::function<void(MqttDelivery&& delivery)>;

  /// Validates the options (URL, client id, TLS CA file); never touches the network.
  static absl::StatusOr<std::shared_ptr<MqttConsumer>> Create(MqttConsumerOptions options);
  /// Stop()s.
  ~MqttConsumer();
  MqttConsumer(const MqttConsumer&) = delete;
  MqttConsumer& operator=(const MqttConsumer&) = delete;

  /// Before Start().
  void SetHandler(Handler handler);
  /// Starts the network thread. Fails when called twice.
  absl::Status Start();
  /// Writes the PUBACKs that are ready, DISCONNECTs normally (the broker keeps the session and
  /// sends every unacknowledged message again to the next connection) and joins the thread.
  /// Idempotent; waits at most ~2 s for the writes.
  void Stop();

  /// The message of `token` is taken care of. Never blocks on the network.
  void Ack(uint64_t token);
  /// Hand nothing more to the handler: messages that arrive from now on are left
  /// unacknowledged for the session's next connection. The connection stays up for the PUBACKs
  /// of what was delivered; a lost connection is not re-established.
  void Pause();
  /// Paused, every delivered message acknowledged and every PUBACK written (or the connection
  /// is gone: then the broker sends the unwritten ones again).
  [[nodiscard]] bool Drained() const;
  /// True once Drained(), or false after `timeout`.
  bool WaitDrained(std::chrono::milliseconds timeout) const;

  [[nodiscard]] bool connected() const;
  /// Connected and every subscription acknowledged (SUBACK) on this connection.
  [[nodiscard]] bool subscribed() const;
  bool WaitSubscribed(std::chrono::milliseconds timeout) const;
  /// Successful connects after the first one.
  [[nodiscard]] uint64_t reconnects() const { return reconnects_.load(); }
  /// Messages delivered and not yet acknowledged (this connection and earlier ones).
  [[nodiscard]] size_t unacknowledged() const;
  [[nodiscard]] const MqttConsumerOptions& options() const { return options_; }

 private:
  class Connection;
  struct SessionState;

  MqttConsumer(MqttConsumerOptions options, std::string host, uint16_t port, bool tls);

  void Run();
  /// One connection from TCP connect to its end. True when the broker accepted it (CONNACK).
  bool Session(bool first);
  /// Waits until `fd` is ready for `events`, the deadline passes or Stop(). True when ready.
  bool AwaitFd(int fd, short events, std::chrono::steady_clock::time_point deadline);
  /// A connected non-blocking socket to the broker, or -1. Sets the CONNACK deadline, which
  /// bounds the connect too, once the address is resolved.
  int ConnectTcp(SessionState& state);
  bool TlsHandshake(Connection& connection, std::chrono::steady_clock::time_point deadline);
  /// The MQTT conversation of one connection until it ends; returns what Session() returns.
  bool Converse(Connection& connection, SessionState& state);
  /// Queues the PUBACKs the application released; true when stopping.
  bool QueueAcks(Connection& connection, const SessionState& state, std::vector<uint16_t>& ready);
  /// DISCONNECT (when accepted), flush and graceful close, within kDisconnectGrace.
  void Disconnect(Connection& connection, bool accepted);
  /// Handles the packets read, up to a QoS 1 PUBLISH the window has no room for (`held`).
  /// False ends the connection.
  bool HandleReceived(Connection& connection, mqtt::PacketReader& reader, SessionState& state,
                      bool& held);
  /// CONNACK deadline, PINGREQ timer, PINGRESP deadline: a value ends the connection with it.
  std::optional<bool> CheckTimers(Connection& connection, SessionState& state, bool held);
  /// Notifies the waiters of Drained() when everything became written and acknowledged.
  void NoteFlushed(const Connection& connection);
  /// Waits for the socket (or a wake-up, or a timer) and reads; false ends the connection.
  bool PollAndRead(Connection& connection, mqtt::PacketReader& reader, const SessionState& state,
                   bool held);
  /// Handles one packet of the current connection; false ends the connection.
  bool OnPacket(Connection& connection, const mqtt::Packet& packet, SessionState& state);
  bool OnConnack(Connection& connection, const mqtt::Packet& packet, SessionState& state);
  bool OnPublish(const mqtt::Packet& packet);
  bool OnSuback(const mqtt::Packet& packet);
  void Wake();
  /// Empties the wake-up eventfd.
  void DrainWake();
  /// Waits until stopping, at most `timeout`.
  void WaitStopping(std::chrono::milliseconds timeout);
  [[nodiscard]] bool DrainedLocked() const;

  const MqttConsumerOptions options_;
  const std::string host_;
  const uint16_t port_;
  const bool tls_;
  const std::string masked_url_;
  void* ssl_ctx_ = nullptr;  ///< SSL_CTX for mqtts://
  int wake_fd_ = -1;
  Handler handler_;
  std::thread thread_;
  std::atomic<uint64_t> reconnects_{0};

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  bool started_ = false;
  bool stopping_ = false;
  bool paused_ = false;
  bool connected_ = false;
  bool subscribed_ = false;
  bool flushed_ = true;  ///< Nothing waits to be written on the connection.
  AckWindow window_;
};

}  // namespace iot::common
