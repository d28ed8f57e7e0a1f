#include "iot/common/mqtt.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <spdlog/spdlog.h>

#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "iot/common/backoff.h"
#include "iot/common/url.h"

namespace iot::common {
namespace {

constexpr size_t kMaxPayload = 268'435'455;  // MQTT's largest remaining length.
constexpr int kLoopTimeoutMs = 50;           // Bounds how long Stop() waits for the thread.
constexpr auto kDisconnectGrace = std::chrono::seconds(2);

void InitLibrary() {
  static std::once_flag once;
  // Never cleaned up: clients may live until exit, and cleanup only frees process state.
  std::call_once(once, [] { mosquitto_lib_init(); });
}

absl::Status MosquittoStatus(int rc, const std::string& what) {
  const std::string message = absl::StrCat(what, ": ", mosquitto_strerror(rc));
  switch (rc) {
    case MOSQ_ERR_SUCCESS:
      return absl::OkStatus();
    case MOSQ_ERR_NO_CONN:
    case MOSQ_ERR_CONN_LOST:
    case MOSQ_ERR_ERRNO:
      return absl::UnavailableError(message);
    case MOSQ_ERR_INVAL:
    case MOSQ_ERR_PAYLOAD_SIZE:
    case MOSQ_ERR_MALFORMED_UTF8:
    case MOSQ_ERR_OVERSIZE_PACKET:
    case MOSQ_ERR_QOS_NOT_SUPPORTED:
      return absl::InvalidArgumentError(message);
    case MOSQ_ERR_NOMEM:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace

/// Static trampolines from libmosquitto's C callbacks to the client.
struct MqttCallbacks {
  static void Connect(struct mosquitto* /*mosq*/, void* obj, int reason_code, int /*flags*/,
                      const mosquitto_property* /*props*/) {
    static_cast<MqttClient*>(obj)->OnConnect(reason_code);
  }
  static void Disconnect(struct mosquitto* /*mosq*/, void* obj, int reason_code,
                         const mosquitto_property* /*props*/) {
    static_cast<MqttClient*>(obj)->OnDisconnect(reason_code);
  }
  static void Subscribe(struct mosquitto* /*mosq*/, void* obj, int mid, int qos_count,
                        const int* granted_qos, const mosquitto_property* /*props*/) {
    static_cast<MqttClient*>(obj)->OnSubscribe(mid, qos_count, granted_qos);
  }
  static void Message(struct mosquitto* /*mosq*/, void* obj, const mosquitto_message* message,
                      const mosquitto_property* /*props*/) {
    MqttMessage out;
    out.topic = message->topic;
    if (message->payload != nullptr && message->payloadlen > 0) {
      out.payload.assign(static_cast<const char*>(message->payload),
                         static_cast<size_t>(message->payloadlen));
    }
    out.qos = message->qos;
    out.retain = message->retain;
    static_cast<MqttClient*>(obj)->OnMessage(std::move(out));
  }
  static void Publish(struct mosquitto* /*mosq*/, void* obj, int mid, int reason_code,
                      const mosquitto_property* /*props*/) {
    static_cast<MqttClient*>(obj)->OnPublish(mid, reason_code);
  }
  static void Log(struct mosquitto* /*mosq*/, void* obj, int level, const char* text) {
    if (level == MOSQ_LOG_ERR || level == MOSQ_LOG_WARNING) {
      spdlog::warn("mqtt {}: libmosquitto: {}", static_cast<MqttClient*>(obj)->masked_url_, text);
    }
  }
};

absl::StatusOr<std::unique_ptr<MqttClient>> MqttClient::Create(MqttOptions options) {
  auto url = ParseUrl(options.url);
  if (!url.ok()) {
    return url.status();
  }
  if (url->scheme != "mqtt" && url->scheme != "mqtts") {
    return absl::InvalidArgumentError(
        absl::StrCat("MQTT URL '", MaskUrl(options.url), "' must start with mqtt:// or mqtts://"));
  }
  const bool tls = url->scheme == "mqtts";
  if (url->port == 0) {
    url->port = tls ? 8883 : 1883;
  }
  if (options.client_id.empty() && !options.clean_start) {
    return absl::InvalidArgumentError("MQTT clean_start = false needs a client_id");
  }
  if (options.keepalive_seconds < 5 || options.keepalive_seconds > 65535) {
    return absl::InvalidArgumentError("MQTT keepalive_seconds must be in [5, 65535]");
  }
  if (options.max_inflight < 1 || options.max_inflight > 65535) {
    return absl::InvalidArgumentError("MQTT max_inflight must be in [1, 65535]");
  }
  std::string username = options.username.empty() ? url->user : options.username;
  std::string password = options.password.empty() ? url->password : options.password;
  std::unique_ptr<MqttClient> client(new MqttClient(std::move(options), url->host, url->port,
                                                    std::move(username), std::move(password)));

  InitLibrary();
  const MqttOptions& o = client->options_;
  client->mosq_ = mosquitto_new(o.client_id.empty() ? nullptr : o.client_id.c_str(), o.clean_start,
                                client.get());
  if (client->mosq_ == nullptr) {
    return absl::InternalError("mosquitto_new failed");
  }
  mosquitto* mosq = client->mosq_;
  mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_int_option(mosq, MOSQ_OPT_RECEIVE_MAXIMUM, o.max_inflight);
  mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, o.max_inflight);
  // Small QoS 1 messages and their acks must go out at once: with Nagle, a request written
  // while an ack is unacknowledged waits for the peer's delayed ACK (~40 ms on Linux).
  mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
  // Our own thread drives mosquitto_loop(); libmosquitto must lock for calls from others.
  mosquitto_threaded_set(mosq, true);
  if (!client->username_.empty()) {
    const int rc =
        mosquitto_username_pw_set(mosq, client->username_.c_str(),
                                  client->password_.empty() ? nullptr : client->password_.c_str());
    if (rc != MOSQ_ERR_SUCCESS) {
      return MosquittoStatus(rc, "MQTT username/password");
    }
  }
  if (tls) {
    // Verifies the broker's certificate and host name (libmosquitto's defaults).
    const int rc = mosquitto_tls_set(mosq, o.tls_ca_file.empty() ? nullptr : o.tls_ca_file.c_str(),
                                     o.tls_ca_file.empty() ? "/etc/ssl/certs" : nullptr, nullptr,
                                     nullptr, nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      return MosquittoStatus(rc, absl::StrCat("MQTT TLS CA file '", o.tls_ca_file, "'"));
    }
  }
  mosquitto_connect_v5_callback_set(mosq, &MqttCallbacks::Connect);
  mosquitto_disconnect_v5_callback_set(mosq, &MqttCallbacks::Disconnect);
  mosquitto_subscribe_v5_callback_set(mosq, &MqttCallbacks::Subscribe);
  mosquitto_message_v5_callback_set(mosq, &MqttCallbacks::Message);
  mosquitto_publish_v5_callback_set(mosq, &MqttCallbacks::Publish);
  mosquitto_log_callback_set(mosq, &MqttCallbacks::Log);
  return client;
}

MqttClient::MqttClient(MqttOptions options, std::string host, uint16_t port, std::string username,
                       std::string password)
    : options_(std::move(options)),
      host_(std::move(host)),
      port_(port),
      username_(std::move(username)),
      password_(std::move(password)),
      masked_url_(MaskUrl(options_.url)) {}

MqttClient::~MqttClient() {
  Stop();
  if (mosq_ != nullptr) {
    mosquitto_destroy(mosq_);
  }
}

void MqttClient::SetMessageHandler(MessageHandler handler) {
  message_handler_ = std::move(handler);
}

void MqttClient::SetConnectionHandler(ConnectionHandler handler) {
  connection_handler_ = std::move(handler);
}

absl::Status MqttClient::Start() {
  std::lock_guard lock(mutex_);
  if (started_) {
    return absl::FailedPreconditionError("MqttClient::Start called twice");
  }
  started_ = true;
  thread_ = std::thread(&MqttClient::Run, this);
  return absl::OkStatus();
}

void MqttClient::Stop() {
  std::thread thread;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    thread = std::move(thread_);
  }
  changed_.notify_all();
  if (thread.joinable()) {
    thread.join();
  }
}

void MqttClient::Run() {
  Backoff backoff;
  uint32_t failures = 0;
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) {
        return;
      }
    }
    if (ConnectOnce()) {
      bool disconnect_sent = false;
      auto deadline = std::chrono::steady_clock::time_point::max();
      while (mosquitto_loop(mosq_, kLoopTimeoutMs, 1) == MOSQ_ERR_SUCCESS) {
        bool stopping = false;
        {
          std::lock_guard lock(mutex_);
          stopping = stopping_;
        }
        if (stopping && !disconnect_sent) {
          disconnect_sent = true;
          deadline = std::chrono::steady_clock::now() + kDisconnectGrace;
          if (mosquitto_disconnect_v5(mosq_, MQTT_RC_NORMAL_DISCONNECTION, nullptr) !=
              MOSQ_ERR_SUCCESS) {
            break;
          }
        }
        if (std::chrono::steady_clock::now() > deadline) {
          break;
        }
      }
      // Usually on_disconnect did this already; not after every error path of mosquitto_loop.
      MarkDisconnected();
      if (connack_ok_) {
        backoff.Reset();
        failures = 0;
      }
    }
    if (!connack_ok_ && ++failures == 1) {
      spdlog::warn("mqtt {}: cannot connect; retrying with backoff", masked_url_);
    }
    WaitBackoff(backoff.Next());
  }
}

bool MqttClient::ConnectOnce() {
  connack_ok_ = false;
  mosquitto_property* properties = nullptr;
  if (options_.session_expiry_seconds > 0) {
    mosquitto_property_add_int32(&properties, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                 options_.session_expiry_seconds);
  }
  // The blocking variant: this is our network thread, and unlike connect_async it takes
  // properties, which libmosquitto 2.0 does not keep for its own reconnects.
  const int rc = mosquitto_connect_bind_v5(mosq_, host_.c_str(), port_, options_.keepalive_seconds,
                                           nullptr, properties);
  mosquitto_property_free_all(&properties);
  if (rc != MOSQ_ERR_SUCCESS) {
    spdlog::debug("mqtt {}: connect: {}", masked_url_, mosquitto_strerror(rc));
    return false;
  }
  return true;
}

void MqttClient::MarkDisconnected() {
  bool was_connected = false;
  {
    std::lock_guard lock(mutex_);
    was_connected = connected_;
    connected_ = false;
    pending_subacks_.clear();
  }
  if (was_connected) {
    changed_.notify_all();
    if (connection_handler_) {
      connection_handler_(false);
    }
  }
}

void MqttClient::WaitBackoff(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, delay, [this] { return stopping_; });
}

void MqttClient::OnConnect(int reason_code) {
  if (reason_code != 0) {
    spdlog::warn("mqtt {}: broker refused the connection: {}", masked_url_,
                 mosquitto_reason_string(reason_code));
    return;
  }
  connack_ok_ = true;
  uint64_t reconnects = 0;
  {
    std::lock_guard lock(mutex_);
    connected_ = true;
    if (ever_connected_) {
      reconnects = ++reconnects_;
    }
    ever_connected_ = true;
    pending_subacks_.clear();
    for (const auto& [filter, qos] : subscriptions_) {
      int mid = 0;
      const int rc = mosquitto_subscribe_v5(mosq_, &mid, filter.c_str(), qos, 0, nullptr);
      if (rc == MOSQ_ERR_SUCCESS) {
        pending_subacks_.emplace(mid, filter);
      } else {
        spdlog::error("mqtt {}: subscribe '{}': {}", masked_url_, filter, mosquitto_strerror(rc));
      }
    }
  }
  spdlog::info("mqtt {}: connected as '{}'{}", masked_url_, options_.client_id,
               reconnects > 0 ? absl::StrCat(" (reconnect ", reconnects, ")") : "");
  changed_.notify_all();
  if (connection_handler_) {
    connection_handler_(true);
  }
}

void MqttClient::OnDisconnect(int reason_code) {
  bool stopping = false;
  {
    std::lock_guard lock(mutex_);
    stopping = stopping_;
  }
  if (!stopping && connack_ok_) {
    spdlog::warn(
        "mqtt {}: connection lost: {}", masked_url_,
        reason_code < 128 ? mosquitto_strerror(reason_code) : mosquitto_reason_string(reason_code));
  }
  MarkDisconnected();
}

void MqttClient::OnSubscribe(int mid, int qos_count, const int* granted_qos) {
  {
    std::lock_guard lock(mutex_);
    auto it = pending_subacks_.find(mid);
    if (it != pending_subacks_.end()) {
      for (int i = 0; i < qos_count; ++i) {
        if (granted_qos[i] >= 128) {
          spdlog::error("mqtt {}: subscription to '{}' refused: {}", masked_url_, it->second,
                        mosquitto_reason_string(granted_qos[i]));
        }
      }
      pending_subacks_.erase(it);
    }
  }
  changed_.notify_all();
}

void MqttClient::OnMessage(MqttMessage message) {
  if (!message_handler_) {
    return;
  }
  // An exception must not unwind through libmosquitto's C frames.
  try {
    message_handler_(message);
  } catch (const std::exception& e) {
    spdlog::error("mqtt {}: message handler threw on '{}': {}", masked_url_, message.topic,
                  e.what());
  } catch (...) {
    spdlog::error("mqtt {}: message handler threw on '{}'", masked_url_, message.topic);
  }
}

absl::Status MqttClient::Subscribe(const std::string& filter, int qos) {
  if (qos < 0 || qos > 2) {
    return absl::InvalidArgumentError(absl::StrCat("MQTT QoS must be 0, 1 or 2, not ", qos));
  }
  if (filter.empty() || mosquitto_sub_topic_check(filter.c_str()) != MOSQ_ERR_SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat("bad MQTT topic filter '", filter, "'"));
  }
  std::lock_guard lock(mutex_);
  subscriptions_[filter] = qos;
  if (!connected_) {
    return absl::OkStatus();
  }
  int mid = 0;
  const int rc = mosquitto_subscribe_v5(mosq_, &mid, filter.c_str(), qos, 0, nullptr);
  if (rc == MOSQ_ERR_SUCCESS) {
    pending_subacks_.emplace(mid, filter);
  }
  // Remembered either way: the next connect subscribes.
  return rc == MOSQ_ERR_NO_CONN ? absl::OkStatus() : MosquittoStatus(rc, "MQTT subscribe");
}

absl::Status MqttClient::Unsubscribe(const std::string& filter) {
  std::lock_guard lock(mutex_);
  if (subscriptions_.erase(filter) == 0 || !connected_) {
    return absl::OkStatus();
  }
  const int rc = mosquitto_unsubscribe_v5(mosq_, nullptr, filter.c_str(), nullptr);
  return rc == MOSQ_ERR_NO_CONN ? absl::OkStatus() : MosquittoStatus(rc, "MQTT unsubscribe");
}

absl::Status MqttClient::Publish(const std::string& topic, std::string_view payload, int qos,
                                 bool retain) {
  if (qos < 0 || qos > 2) {
    return absl::InvalidArgumentError(absl::StrCat("MQTT QoS must be 0, 1 or 2, not ", qos));
  }
  if (payload.size() > kMaxPayload) {
    return absl::InvalidArgumentError(
        absl::StrCat("MQTT payload of ", payload.size(), " bytes is too large"));
  }
  std::lock_guard lock(mutex_);
  if (!connected_) {
    return absl::UnavailableError(absl::StrCat("mqtt ", masked_url_, ": not connected"));
  }
  const int rc =
      mosquitto_publish_v5(mosq_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                           payload.data(), qos, retain, nullptr);
  return MosquittoStatus(rc, absl::StrCat("mqtt publish to '", topic, "'"));
}

absl::StatusOr<int> MqttClient::PublishAndWait(const std::string& topic, std::string_view payload,
                                               int qos, std::chrono::milliseconds timeout) {
  if (qos < 0 || qos > 2) {
    return absl::InvalidArgumentError(absl::StrCat("MQTT QoS must be 0, 1 or 2, not ", qos));
  }
  if (payload.size() > kMaxPayload) {
    return absl::InvalidArgumentError(
        absl::StrCat("MQTT payload of ", payload.size(), " bytes is too large"));
  }
  std::unique_lock lock(mutex_);
  if (!connected_) {
    return absl::UnavailableError(absl::StrCat("mqtt ", masked_url_, ": not connected"));
  }
  int mid = 0;
  // Registered under the lock that OnPublish takes, so the answer cannot come first.
  const int rc = mosquitto_publish_v5(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                                      payload.data(), qos, false, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    return MosquittoStatus(rc, absl::StrCat("mqtt publish to '", topic, "'"));
  }
  awaited_publishes_[mid] = -1;
  const bool answered = changed_.wait_for(lock, timeout, [&] {
    const auto it = awaited_publishes_.find(mid);
    return it == awaited_publishes_.end() || it->second >= 0;
  });
  const auto it = awaited_publishes_.find(mid);
  const int reason = it == awaited_publishes_.end() ? -1 : it->second;
  awaited_publishes_.erase(mid);
  if (!answered || reason < 0) {
    return absl::DeadlineExceededError(absl::StrCat(
        "mqtt publish to '", topic, "': no acknowledgement within ", timeout.count(), " ms"));
  }
  return reason;
}

void MqttClient::OnPublish(int mid, int reason_code) {
  {
    std::lock_guard lock(mutex_);
    const auto it = awaited_publishes_.find(mid);
    if (it == awaited_publishes_.end()) {
      return;
    }
    it->second = reason_code;
  }
  changed_.notify_all();
}

bool MqttClient::connected() const {
  std::lock_guard lock(mutex_);
  return connected_;
}

bool MqttClient::WaitConnected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return connected_; });
}

bool MqttClient::WaitSubscribed(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout,
                           [this] { return connected_ && pending_subacks_.empty(); });
}

}  // namespace iot::common
