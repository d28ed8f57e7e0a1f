#include "test_client.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <sys/socket.h>

#include <cstdlib>
#include <stdexcept>

namespace iot::broker_test {

struct TestClientCallbacks {
  static TestClient& Self(void* obj) { return *static_cast<TestClient*>(obj); }

  static void OnConnect(struct mosquitto* /*mosq*/, void* obj, int rc, int /*flags*/,
                        const mosquitto_property* /*props*/) {
    TestClient& self = Self(obj);
    std::lock_guard lock(self.mutex_);
    self.connack_ = rc;
    self.connected_ = rc == 0;
    self.changed_.notify_all();
  }

  static void OnDisconnect(struct mosquitto* /*mosq*/, void* obj, int /*rc*/,
                           const mosquitto_property* /*props*/) {
    TestClient& self = Self(obj);
    std::lock_guard lock(self.mutex_);
    self.connected_ = false;
    self.closed_ = true;
    self.changed_.notify_all();
  }

  static void OnPublish(struct mosquitto* /*mosq*/, void* obj, int mid, int reason_code,
                        const mosquitto_property* /*props*/) {
    TestClient& self = Self(obj);
    std::lock_guard lock(self.mutex_);
    self.acks_[mid] = reason_code;
    self.changed_.notify_all();
  }

  static void OnSubscribe(struct mosquitto* /*mosq*/, void* obj, int mid, int qos_count,
                          const int* granted_qos, const mosquitto_property* /*props*/) {
    TestClient& self = Self(obj);
    std::lock_guard lock(self.mutex_);
    self.acks_[mid] = qos_count > 0 ? granted_qos[0] : 0x80;
    self.changed_.notify_all();
  }

  static void OnMessage(struct mosquitto* /*mosq*/, void* obj,
                        const struct mosquitto_message* message, const mosquitto_property* props) {
    TestClient& self = Self(obj);
    UserProperties user;
    for (const mosquitto_property* p = props; p != nullptr; p = mosquitto_property_next(p)) {
      char* name = nullptr;
      char* value = nullptr;
      if (mosquitto_property_identifier(p) == MQTT_PROP_USER_PROPERTY &&
          mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, false) !=
              nullptr) {
        user.emplace_back(name, value);
        std::free(name);
        std::free(value);
      }
    }
    std::lock_guard lock(self.mutex_);
    self.messages_.push_back(
        ReceivedMessage{.topic = message->topic,
                        .payload = std::string(static_cast<const char*>(message->payload),
                                               static_cast<size_t>(message->payloadlen)),
                        .qos = message->qos,
                        .retain = message->retain,
                        .user_properties = std::move(user)});
    self.changed_.notify_all();
  }
};

TestClient::TestClient(Options options) : options_(std::move(options)) {
  static const int init = mosquitto_lib_init();
  (void)init;
  mosq_ = mosquitto_new(options_.client_id.c_str(), options_.clean_session, this);
  if (mosq_ == nullptr) {
    throw std::runtime_error("mosquitto_new failed");
  }
  // The network thread is ours: publish/subscribe from the test thread only queue packets.
  mosquitto_threaded_set(mosq_, true);
  mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION,
                       options_.protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
  if (options_.username) {
    mosquitto_username_pw_set(mosq_, options_.username->c_str(),
                              options_.password ? options_.password->c_str() : nullptr);
  }
  if (!options_.ca_file.empty()) {
    mosquitto_tls_set(mosq_, options_.ca_file.c_str(), nullptr,
                      options_.cert_file.empty() ? nullptr : options_.cert_file.c_str(),
                      options_.key_file.empty() ? nullptr : options_.key_file.c_str(), nullptr);
  }
  if (!options_.will_topic.empty()) {
    mosquitto_will_set_v5(
        mosq_, options_.will_topic.c_str(), static_cast<int>(options_.will_payload.size()),
        options_.will_payload.data(), options_.will_qos, options_.will_retain, nullptr);
  }
  mosquitto_connect_v5_callback_set(mosq_, TestClientCallbacks::OnConnect);
  mosquitto_disconnect_v5_callback_set(mosq_, TestClientCallbacks::OnDisconnect);
  mosquitto_publish_v5_callback_set(mosq_, TestClientCallbacks::OnPublish);
  mosquitto_subscribe_v5_callback_set(mosq_, TestClientCallbacks::OnSubscribe);
  mosquitto_message_v5_callback_set(mosq_, TestClientCallbacks::OnMessage);
}

TestClient::~TestClient() {
  Disconnect();
  mosquitto_destroy(mosq_);
}

int TestClient::Connect(std::chrono::milliseconds timeout) {
  if (mosquitto_connect_bind_v5(
          mosq_, "127.0.0.1", options_.port, 30,
          options_.bind_address.empty() ? nullptr : options_.bind_address.c_str(),
          nullptr) != MOSQ_ERR_SUCCESS) {
    return kTimedOut;
  }
  thread_ = std::thread([this] { Run(); });
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [this] { return connack_.has_value() || closed_; });
  return connack_.value_or(kTimedOut);
}

void TestClient::Run() {
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stop_) {
        return;
      }
    }
    const int rc = mosquitto_loop(mosq_, 50, 1);
    if (rc != MOSQ_ERR_SUCCESS) {
      std::lock_guard lock(mutex_);
      connected_ = false;
      closed_ = true;
      changed_.notify_all();
      return;
    }
  }
}

int TestClient::Publish(const std::string& topic, const std::string& payload, int qos,
                        std::chrono::milliseconds timeout, const UserProperties& properties,
                        bool retain) {
  int mid = 0;
  mosquitto_property* props = nullptr;
  for (const auto& [name, value] : properties) {
    mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, name.c_str(),
                                       value.c_str());
  }
  const int rc = mosquitto_publish_v5(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                                      payload.data(), qos, retain, props);
  mosquitto_property_free_all(&props);
  if (rc != MOSQ_ERR_SUCCESS) {
    return kTimedOut;
  }
  if (qos == 0) {
    return 0;
  }
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return acks_.contains(mid) || closed_; }) ||
      !acks_.contains(mid)) {
    return kTimedOut;
  }
  return acks_[mid];
}

int TestClient::Subscribe(const std::string& filter, int qos, std::chrono::milliseconds timeout) {
  int mid = 0;
  if (mosquitto_subscribe_v5(mosq_, &mid, filter.c_str(), qos, 0, nullptr) != MOSQ_ERR_SUCCESS) {
    return kTimedOut;
  }
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return acks_.contains(mid) || closed_; }) ||
      !acks_.contains(mid)) {
    return kTimedOut;
  }
  return acks_[mid];
}

void TestClient::StopThread() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

void TestClient::Disconnect() {
  if (connected()) {
    mosquitto_disconnect(mosq_);
    // Let the network thread write the DISCONNECT.
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, std::chrono::seconds(2), [this] { return closed_; });
  }
  StopThread();
}

void TestClient::Drop() {
  StopThread();
  // The socket closes without a DISCONNECT: the broker sees a lost connection.
  ::shutdown(mosquitto_socket(mosq_), SHUT_RDWR);
  std::lock_guard lock(mutex_);
  connected_ = false;
  closed_ = true;
}

std::string ReceivedMessage::Property(const std::string& name) const {
  for (const auto& [key, value] : user_properties) {
    if (key == name) {
      return value;
    }
  }
  return "";
}

bool TestClient::connected() const {
  std::lock_guard lock(mutex_);
  return connected_;
}

bool TestClient::WaitDisconnected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return closed_; });
}

bool TestClient::WaitForMessage(const std::function<bool(const ReceivedMessage&)>& predicate,
                                std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] {
    for (const auto& message : messages_) {
      if (predicate(message)) {
        return true;
      }
    }
    return false;
  });
}

bool TestClient::WaitForCount(size_t count, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return messages_.size() >= count; });
}

std::vector<ReceivedMessage> TestClient::messages() const {
  std::lock_guard lock(mutex_);
  return messages_;
}

std::vector<ReceivedMessage> TestClient::messages_on(const std::string& topic) const {
  std::lock_guard lock(mutex_);
  std::vector<ReceivedMessage> out;
  for (const auto& message : messages_) {
    if (message.topic == topic) {
      out.push_back(message);
    }
  }
  return out;
}

}  // namespace iot::broker_test
