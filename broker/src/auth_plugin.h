#pragma once

// The iot_auth plugin's logic: authentication, authorisation, downlink relay, presence and
// kicking frozen/deleted devices. It sees no mosquitto types: the entry points
// (mosquitto_plugin.cpp) translate events into these calls and BrokerApi into mosquitto calls.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "alink_client_id.h"
#include "device_directory.h"
#include "iot/common/crypto.h"
#include "iot/common/rate_limiter.h"
#include "plugin_config.h"

namespace iot::broker {

enum class LogLevel { kDebug, kInfo, kNotice, kWarning, kError };

/// What the plugin needs from the broker. Called on the broker thread only, except Log.
/// MQTT v5 user properties (name, value).
using UserProperties = std::vector<std::pair<std::string, std::string>>;

/// The MQTT v5 user property carrying the id the plugin gives every device uplink and presence
/// event it relays (the gateway's kMessageIdProperty): the same on every delivery of the message,
/// after a consumer's crash and, with persistence, a broker restart (README.md, Message ids).
inline constexpr std::string_view kMessageIdProperty = "iot-message-id";
/// The MQTT v5 user property with the time (milliseconds since the epoch, decimal) at which the
/// broker received a device uplink from the device, stamped next to kMessageIdProperty: the
/// gateway applies a device's rate limit at that time, so that a backlog the broker queued while
/// the gateway was slow or away is not mistaken for a burst from the device (README.md).
inline constexpr std::string_view kReceivedAtProperty = "iot-received-at";

class BrokerApi {
 public:
  virtual ~BrokerApi() = default;
  /// Queues a message from the broker: to every matching subscriber when `client_id` is empty,
  /// else to that one connected client whether or not it subscribed. `retain` (only without a
  /// client id) stores it as the topic's retained message.
  virtual bool Publish(const std::string& client_id, const std::string& topic,
                       std::string_view payload, int qos, bool retain = false,
                       const UserProperties& properties = {}) = 0;
  /// Disconnects the client with this id (no will). False if there is none.
  virtual bool Kick(const std::string& client_id) = 0;
  /// Thread-safe; lines from other threads may be written later, on the broker thread.
  virtual void Log(LogLevel level, const std::string& message) = 0;
};

/// A connection (mosquitto context) as the plugin identifies it: an opaque key, stable from
/// authentication to disconnect.
using SessionKey = const void*;

struct ConnectRequest {
  SessionKey session = nullptr;
  std::string client_id;
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::string address;
  /// SHA-256 (lowercase hex) of the TLS client certificate, when the client presented one.
  std::optional<std::string> certificate_fingerprint;
};

enum class Access { kRead, kWrite, kSubscribe, kUnsubscribe };

/// What an ACL check of a publish or a will is about.
struct AclMessage {
  std::string_view payload;
  int qos = 0;
};

enum class MessageVerdict {
  kPass,
  /// Drop the message; an MQTT v5 QoS 1/2 publisher gets reason code 0x87 (not authorized).
  kDeny,
};

class AuthPlugin {
 public:
  using SystemClock = std::function<std::chrono::system_clock::time_point()>;

  /// `directory` answers credential lookups (Redis behind a cache).
  AuthPlugin(PluginConfig config, common::SecretBox secret_box,
             std::shared_ptr<DeviceDirectory> directory, BrokerApi& broker, SystemClock clock = {});

  /// MOSQ_EVT_BASIC_AUTH. True: the client may connect.
  bool OnBasicAuth(const ConnectRequest& request);
  /// MOSQ_EVT_ACL_CHECK.
  /// `username` is the client's as the broker knows it: it is what identifies an offline
  /// persistent session (mosquitto checks read access when it queues a message for one, after
  /// this plugin has forgotten the connection).
  /// A write check of a device connection that is closing (or already forgotten) is its will
  /// (`message`: its payload and QoS): one on its own up-topics is relayed to the gateways like
  /// any uplink, with a message id, and the original is refused (README.md, Wills).
  bool OnAclCheck(SessionKey session, Access access, std::string_view topic,
                  std::string_view username = {}, const AclMessage* message = nullptr);
  /// MOSQ_EVT_MESSAGE: relays `$iot/down/...` from service accounts. For a device's own uplink
  /// sets `*deliver_as` to the topic the broker must deliver it on instead (`iot/up/...`,
  /// kUplinkPrefix) and `*message_id` to the id to stamp it with (kMessageIdProperty); both are
  /// left empty when the topic stays as it is. `*retain` (the publish's retain flag) is cleared
  /// for devices: a device never leaves a retained message anywhere.
  MessageVerdict OnMessage(SessionKey session, std::string_view topic, std::string_view payload,
                           int qos, std::string* deliver_as = nullptr,
                           std::string* message_id = nullptr, bool* retain = nullptr);
  /// MOSQ_EVT_DISCONNECT (also for connections that never authenticated).
  void OnDisconnect(SessionKey session);
  /// MOSQ_EVT_TICK: applies kicks queued by the change watcher, forgets closed sessions; the
  /// first one announces the uplink partition count (retained, kPartitionsTopic).
  void OnTick();
  /// MOSQ_EVT_RELOAD: mosquitto is about to re-authenticate every client it knows, connected or
  /// not (persistent sessions), before the next tick.
  void OnReload();

  // ---- From the change watcher's thread ----
  /// A device's record changed: re-read it (if held, connected or the projection is complete)
  /// and queue a kick if it is connected and now frozen or deleted.
  void OnDeviceChanged(const std::string& device_id);
  /// The `tm:changes` subscription went live or was lost (DeviceDirectory::SetLive).
  void OnSubscription(bool live);
  /// Reload the credential projection and re-read every connected device; queue kicks for the
  /// frozen and the deleted. `after_subscribe`: the first load after a (re)subscription.
  void Resync(bool after_subscribe);

  /// Connected devices (for tests and logs).
  [[nodiscard]] size_t connected_devices() const;

 private:
  enum class Role { kDevice, kService };

  struct Session {
    Role role = Role::kDevice;
    std::string identity;  ///< Device id or service account name.
    std::string client_id;
    std::string address;
    DeviceRecord record;  ///< Devices: tenant/product/node for presence.
    /// Alink devices: their productKey and deviceName, which name their topics (alink_topics.h);
    /// nullopt for IoTDA devices (topic_rules.h).
    std::optional<AlinkName> alink;
    /// Disconnected (or being kicked): its presence "disconnected" has been sent; forgotten at
    /// the next tick (mosquitto may still check the ACL of its will until then).
    bool closing = false;
  };

  bool AuthenticateService(const ConnectRequest& request, const std::string& username);
  /// IoTDA client id `{device_id}_0_{sign}_{YYYYMMDDHH}`.
  bool AuthenticateDevice(const ConnectRequest& request, const std::string& username);
  /// Alink client id `<cid>|k=v,...|` (alink_client_id.h).
  bool AuthenticateAlink(const ConnectRequest& request, const std::string& username);
  /// The record of a device that connects: found, not frozen. nullopt when refused (logged) —
  /// or, with `*accept_as_is`, when a reload re-authenticates it while Redis is down (it stays).
  std::optional<DeviceRecord> ConnectingDevice(const ConnectRequest& request,
                                               const std::string& device_id, bool* accept_as_is);
  /// The device's secret, opened; nullopt when it has none or it cannot be opened (refused).
  std::optional<std::string> DeviceSecret(const ConnectRequest& request,
                                          const std::string& device_id, const DeviceRecord& record);
  /// The device's record: from memory, or from Redis on this thread — for an id not held, within
  /// the per-address and overall lookup limits (nullopt: refused for them, already logged).
  std::optional<Lookup> FindDevice(const ConnectRequest& request, const std::string& device_id);
  /// Logs a refused connect (at most kRefusalLinesPerSecond lines a second: the counts go to the
  /// periodic connect-guard line) and charges the address's bucket unless the connect did.
  void Refuse(const ConnectRequest& request, std::string_view why);
  /// Every `stats_interval`: the connect-guard line, when anything happened.
  void LogConnectStats();
  void RegisterDevice(const ConnectRequest& request, const std::string& device_id,
                      DeviceRecord record, std::optional<AlinkName> alink = std::nullopt);
  /// Marks the device's current session closing, publishes its "disconnected" and kicks it.
  void EndDeviceSession(const std::string& device_id, std::string_view reason, bool kick);
  void PublishPresence(std::string_view event, const std::string& device_id, const Session& session,
                       std::string_view reason);
  void PublishDownResult(const std::string& device_id, std::string_view device_topic,
                         std::string_view status, const std::string& client_id);
  /// A new message id: `{boot nonce}-{counter}`, unique across broker restarts.
  std::string NextMessageId();
  /// Relays the will of `device_id` (`alink`: an Alink device) on its own up-topic `topic` to
  /// the gateways.
  void RelayWill(const std::string& device_id, const std::optional<AlinkName>& alink,
                 std::string_view topic, const AclMessage& message);
  /// Watcher thread: queues kicks from re-read records.
  void ApplyRefresh(const RefreshResult& result);
  void QueueKick(const std::string& device_id, std::string reason);
  void Log(LogLevel level, const std::string& message) { broker_.Log(level, message); }

  const PluginConfig config_;
  const common::SecretBox secret_box_;
  const std::shared_ptr<DeviceDirectory> directory_;
  BrokerApi& broker_;
  const SystemClock clock_;
  std::unordered_map<std::string, const ServiceAccount*> service_accounts_;

  // Broker thread only.
  std::unordered_map<SessionKey, Session> sessions_;
  std::unordered_map<std::string, SessionKey> device_sessions_;  ///< device id -> current.
  std::vector<SessionKey> closing_;
  uint64_t presence_seq_ = 0;
  const std::string id_nonce_;  ///< Random per broker process: ids of different boots differ.
  uint64_t next_message_id_ = 0;
  bool reloading_ = false;  ///< Between MOSQ_EVT_RELOAD and the next tick.
  bool partitions_announced_ = false;

  // Connect floods (broker/README.md): per-address bucket of connects that fail or read Redis,
  // the overall budget of broker-thread Redis reads, and what they did (logged periodically).
  struct ConnectStats {
    uint64_t refused = 0;
    uint64_t refused_alink = 0;  ///< Of `refused`, connects in the Alink form.
    uint64_t unknown_from_memory = 0;
    uint64_t refused_per_address = 0;
    uint64_t refused_lookup_budget = 0;
    uint64_t lookups = 0;
    std::chrono::microseconds lookup_total{0};
    std::chrono::microseconds lookup_max{0};
    uint64_t lines_suppressed = 0;
  };
  common::KeyedRateLimiter address_limiter_;
  common::KeyedRateLimiter lookup_limiter_;
  bool connect_charged_ = false;  ///< The connect being authenticated took its address's token.
  ConnectStats stats_;
  std::chrono::steady_clock::time_point stats_since_;
  std::chrono::steady_clock::time_point log_window_;
  int log_lines_ = 0;

  // Shared with the watcher thread.
  mutable std::mutex shared_mutex_;
  std::unordered_set<std::string> connected_;  ///< Mirrors device_sessions_' keys.
  std::vector<std::pair<std::string, std::string>> pending_kicks_;  ///< device id, reason.
};

/// `2026-11-26T17:42:48.123Z`.
std::string FormatIsoTime(std::chrono::system_clock::time_point time);

}  // namespace iot::broker
