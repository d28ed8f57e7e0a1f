// Entry points of libiot_auth.so (mosquitto plugin API v5) and the BrokerApi over mosquitto's
// plugin functions. Everything mosquitto-specific lives here; the logic is in AuthPlugin.

#include <fmt/format.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>
#include <openssl/x509.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "auth_plugin.h"
#include "change_watcher.h"
#include "device_directory.h"
#include "iot/common/crypto.h"
#include "iot/common/redis.h"
#include "iot/common/url.h"
#include "plugin_config.h"

#define IOT_PLUGIN_EXPORT __attribute__((visibility("default")))

namespace iot::broker {
namespace {

/// Bounds each command of the projection's loads (SCAN, pipelines of 1,000 HGETALLs) made on
/// the change watcher's thread, where no client waits for it; short enough that a Redis gone
/// silent during a load is still noticed within seconds (ChangeWatcher::kHeartbeatTimeout).
constexpr std::chrono::milliseconds kBackgroundRedisTimeout{1000};

int MosquittoLevel(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return MOSQ_LOG_DEBUG;
    case LogLevel::kInfo:
      return MOSQ_LOG_INFO;
    case LogLevel::kNotice:
      return MOSQ_LOG_NOTICE;
    case LogLevel::kWarning:
      return MOSQ_LOG_WARNING;
    case LogLevel::kError:
      return MOSQ_LOG_ERR;
  }
  return MOSQ_LOG_INFO;
}

void WriteLog(LogLevel level, const std::string& message) {
  mosquitto_log_printf(MosquittoLevel(level), "iot_auth: %s", message.c_str());
}

/// BrokerApi over mosquitto. Mosquitto is single-threaded and its log functions are not meant to
/// be called from other threads, so lines from the watcher wait for the next tick.
class MosquittoBroker final : public BrokerApi {
 public:
  MosquittoBroker() : broker_thread_(std::this_thread::get_id()) {}

  bool Publish(const std::string& client_id, const std::string& topic, std::string_view payload,
               int qos, bool retain, const UserProperties& user_properties) override {
    mosquitto_property* properties = nullptr;
    for (const auto& [name, value] : user_properties) {
      if (mosquitto_property_add_string_pair(&properties, MQTT_PROP_USER_PROPERTY, name.c_str(),
                                             value.c_str()) != MOSQ_ERR_SUCCESS) {
        mosquitto_property_free_all(&properties);
        return false;
      }
    }
    // The broker owns `properties` from here, whatever the outcome.
    return mosquitto_broker_publish_copy(client_id.empty() ? nullptr : client_id.c_str(),
                                         topic.c_str(), static_cast<int>(payload.size()),
                                         payload.data(), qos, retain,
                                         properties) == MOSQ_ERR_SUCCESS;
  }

  bool Kick(const std::string& client_id) override {
    return mosquitto_kick_client_by_clientid(client_id.c_str(), false) == MOSQ_ERR_SUCCESS;
  }

  void Log(LogLevel level, const std::string& message) override {
    if (std::this_thread::get_id() == broker_thread_) {
      WriteLog(level, message);
      return;
    }
    std::lock_guard lock(mutex_);
    if (queued_.size() < kMaxQueuedLines) {
      queued_.emplace_back(level, message);
    }
  }

  /// Broker thread: writes the lines queued by other threads.
  void Flush() {
    std::vector<std::pair<LogLevel, std::string>> lines;
    {
      std::lock_guard lock(mutex_);
      lines.swap(queued_);
    }
    for (const auto& [level, message] : lines) {
      WriteLog(level, message);
    }
  }

 private:
  static constexpr size_t kMaxQueuedLines = 1000;
  const std::thread::id broker_thread_;
  std::mutex mutex_;
  std::vector<std::pair<LogLevel, std::string>> queued_;
};

/// Sends spdlog lines (iot::common's RedisClient logs through spdlog) to the broker's log.
class BrokerSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit BrokerSink(BrokerApi& broker) : broker_(broker) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    LogLevel level = LogLevel::kInfo;
    if (msg.level >= spdlog::level::err) {
      level = LogLevel::kError;
    } else if (msg.level == spdlog::level::warn) {
      level = LogLevel::kWarning;
    } else if (msg.level <= spdlog::level::debug) {
      level = LogLevel::kDebug;
    }
    broker_.Log(level, std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}

 private:
  BrokerApi& broker_;
};

struct PluginState {
  mosquitto_plugin_id_t* identifier = nullptr;
  MosquittoBroker broker;
  std::shared_ptr<DeviceDirectory> directory;
  std::unique_ptr<AuthPlugin> plugin;
  std::unique_ptr<ChangeWatcher> watcher;
};

std::optional<std::string> CertificateFingerprint(const mosquitto* client) {
  auto* cert = static_cast<X509*>(mosquitto_client_certificate(client));
  if (cert == nullptr) {
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  const int length = i2d_X509(cert, &der);
  X509_free(cert);
  if (length <= 0 || der == nullptr) {
    return std::nullopt;
  }
  std::string fingerprint = common::Sha256Hex(
      std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(length)));
  OPENSSL_free(der);
  return fingerprint;
}

std::optional<std::string> OptionalText(const char* text) {
  return text == nullptr ? std::nullopt : std::optional<std::string>(text);
}

int HandleBasicAuth(int /*event*/, void* event_data, void* userdata) {
  auto* state = static_cast<PluginState*>(userdata);
  const auto* event = static_cast<mosquitto_evt_basic_auth*>(event_data);
  try {
    const char* client_id = mosquitto_client_id(event->client);
    const char* address = mosquitto_client_address(event->client);
    const ConnectRequest request{
        .session = event->client,
        .client_id = client_id == nullptr ? "" : client_id,
        .username = OptionalText(event->username),
        .password = OptionalText(event->password),
        .address = address == nullptr ? "" : address,
        .certificate_fingerprint = CertificateFingerprint(event->client),
    };
    return state->plugin->OnBasicAuth(request) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
  } catch (const std::exception& e) {
    WriteLog(LogLevel::kError,
             fmt::format("authentication failed with an exception: {}", e.what()));
    return MOSQ_ERR_AUTH;
  }
}

int HandleAclCheck(int /*event*/, void* event_data, void* userdata) {
  auto* state = static_cast<PluginState*>(userdata);
  const auto* event = static_cast<mosquitto_evt_acl_check*>(event_data);
  Access access = Access::kRead;
  switch (event->access) {
    case MOSQ_ACL_READ:
      access = Access::kRead;
      break;
    case MOSQ_ACL_WRITE:
      access = Access::kWrite;
      break;
    case MOSQ_ACL_SUBSCRIBE:
      access = Access::kSubscribe;
      break;
    case MOSQ_ACL_UNSUBSCRIBE:
      access = Access::kUnsubscribe;
      break;
    default:
      return MOSQ_ERR_ACL_DENIED;
  }
  try {
    const std::string_view topic = event->topic == nullptr ? "" : event->topic;
    const char* username = mosquitto_client_username(event->client);
    const AclMessage message{
        .payload = std::string_view(static_cast<const char*>(event->payload),
                                    event->payload == nullptr ? 0 : event->payloadlen),
        .qos = event->qos};
    return state->plugin->OnAclCheck(event->client, access, topic,
                                     username == nullptr ? "" : username,
                                     access == Access::kWrite ? &message : nullptr)
               ? MOSQ_ERR_SUCCESS
               : MOSQ_ERR_ACL_DENIED;
  } catch (const std::exception& e) {
    WriteLog(LogLevel::kError, fmt::format("ACL check failed with an exception: {}", e.what()));
    return MOSQ_ERR_ACL_DENIED;
  }
}

/// Replaces any kMessageIdProperty or kReceivedAtProperty a device set itself (it must not
/// choose the id owners deduplicate on, nor the time its rate is measured at) with `id` and
/// `received_at_ms`. The broker owns `*properties`.
int StampRelayProperties(mosquitto_property** properties, const std::string& id,
                         std::int64_t received_at_ms) {
  const std::string name(kMessageIdProperty);
  const std::string time_name(kReceivedAtProperty);
  const auto ours = [&](const char* key) { return name == key || time_name == key; };
  bool forged = false;
  for (const mosquitto_property* p = *properties; p != nullptr; p = mosquitto_property_next(p)) {
    char* key = nullptr;
    char* value = nullptr;
    if (mosquitto_property_identifier(p) == MQTT_PROP_USER_PROPERTY &&
        mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &key, &value, false) !=
            nullptr) {
      forged = forged || ours(key);
      mosquitto_free(key);
      mosquitto_free(value);
    }
  }
  if (forged) {
    // A publish carries only these properties to the message hook (mosquitto 2.0.11 keeps
    // content type, correlation data, payload format, response topic and user properties).
    mosquitto_property* kept = nullptr;
    for (const mosquitto_property* p = *properties; p != nullptr; p = mosquitto_property_next(p)) {
      const int identifier = mosquitto_property_identifier(p);
      char* text = nullptr;
      char* key = nullptr;
      void* data = nullptr;
      uint16_t length = 0;
      uint8_t byte = 0;
      if (identifier == MQTT_PROP_USER_PROPERTY &&
          mosquitto_property_read_string_pair(p, identifier, &key, &text, false) != nullptr) {
        if (!ours(key)) {
          mosquitto_property_add_string_pair(&kept, identifier, key, text);
        }
      } else if ((identifier == MQTT_PROP_CONTENT_TYPE || identifier == MQTT_PROP_RESPONSE_TOPIC) &&
                 mosquitto_property_read_string(p, identifier, &text, false) != nullptr) {
        mosquitto_property_add_string(&kept, identifier, text);
      } else if (identifier == MQTT_PROP_CORRELATION_DATA &&
                 mosquitto_property_read_binary(p, identifier, &data, &length, false) != nullptr) {
        mosquitto_property_add_binary(&kept, identifier, data, length);
      } else if (identifier == MQTT_PROP_PAYLOAD_FORMAT_INDICATOR &&
                 mosquitto_property_read_byte(p, identifier, &byte, false) != nullptr) {
        mosquitto_property_add_byte(&kept, identifier, byte);
      }
      mosquitto_free(text);
      mosquitto_free(key);
      mosquitto_free(data);
    }
    mosquitto_property_free_all(properties);
    *properties = kept;
  }
  const int rc = mosquitto_property_add_string_pair(properties, MQTT_PROP_USER_PROPERTY,
                                                    name.c_str(), id.c_str());
  if (rc != MOSQ_ERR_SUCCESS) {
    return rc;
  }
  return mosquitto_property_add_string_pair(properties, MQTT_PROP_USER_PROPERTY, time_name.c_str(),
                                            std::to_string(received_at_ms).c_str());
}

int HandleMessage(int /*event*/, void* event_data, void* userdata) {
  auto* state = static_cast<PluginState*>(userdata);
  auto* event = static_cast<mosquitto_evt_message*>(event_data);
  try {
    const std::string_view topic = event->topic == nullptr ? "" : event->topic;
    const std::string_view payload(static_cast<const char*>(event->payload),
                                   event->payload == nullptr ? 0 : event->payloadlen);
    std::string deliver_as;
    std::string message_id;
    bool retain = event->retain;
    if (state->plugin->OnMessage(event->client, topic, payload, event->qos, &deliver_as,
                                 &message_id, &retain) != MessageVerdict::kPass) {
      return MOSQ_ERR_ACL_DENIED;
    }
    event->retain = retain;
    if (!message_id.empty()) {
      // The broker stores and persists the message with its properties: the id and the time
      // survive redelivery and, with persistence, a restart (README.md, Message ids).
      const auto received_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count();
      const int rc = StampRelayProperties(&event->properties, message_id, received_at_ms);
      if (rc != MOSQ_ERR_SUCCESS) {
        return rc;
      }
    }
    if (!deliver_as.empty()) {
      // The broker owns the topic string: replace it with one of its own allocation.
      char* replacement = mosquitto_strdup(deliver_as.c_str());
      if (replacement == nullptr) {
        return MOSQ_ERR_NOMEM;
      }
      mosquitto_free(event->topic);
      event->topic = replacement;
    }
    return MOSQ_ERR_SUCCESS;
  } catch (const std::exception& e) {
    WriteLog(LogLevel::kError,
             fmt::format("message handling failed with an exception: {}", e.what()));
    return MOSQ_ERR_ACL_DENIED;
  }
}

int HandleDisconnect(int /*event*/, void* event_data, void* userdata) {
  auto* state = static_cast<PluginState*>(userdata);
  const auto* event = static_cast<mosquitto_evt_disconnect*>(event_data);
  try {
    state->plugin->OnDisconnect(event->client);
  } catch (const std::exception& e) {
    WriteLog(LogLevel::kError, fmt::format("disconnect handling failed: {}", e.what()));
  }
  return MOSQ_ERR_SUCCESS;
}

int HandleTick(int /*event*/, void* /*event_data*/, void* userdata) {
  auto* state = static_cast<PluginState*>(userdata);
  try {
    state->broker.Flush();
    state->plugin->OnTick();
  } catch (const std::exception& e) {
    WriteLog(LogLevel::kError, fmt::format("tick failed: {}", e.what()));
  }
  return MOSQ_ERR_SUCCESS;
}

int HandleReload(int /*event*/, void* /*event_data*/, void* userdata) {
  static_cast<PluginState*>(userdata)->plugin->OnReload();
  return MOSQ_ERR_SUCCESS;
}

struct Registration {
  int event;
  MOSQ_FUNC_generic_callback callback;
};

constexpr Registration kCallbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, HandleBasicAuth},
    {MOSQ_EVT_ACL_CHECK, HandleAclCheck},
    {MOSQ_EVT_MESSAGE, HandleMessage},
    {MOSQ_EVT_DISCONNECT, HandleDisconnect},
    {MOSQ_EVT_TICK, HandleTick},
    {MOSQ_EVT_RELOAD, HandleReload},
};

void Unregister(PluginState& state) {
  for (const auto& registration : kCallbacks) {
    mosquitto_callback_unregister(state.identifier, registration.event, registration.callback,
                                  nullptr);
  }
}

std::vector<std::pair<std::string, std::string>> OptionPairs(const mosquitto_opt* options,
                                                             int option_count) {
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(static_cast<size_t>(std::max(option_count, 0)));
  for (int i = 0; i < option_count; ++i) {
    pairs.emplace_back(options[i].key == nullptr ? "" : options[i].key,
                       options[i].value == nullptr ? "" : options[i].value);
  }
  return pairs;
}

std::shared_ptr<DeviceDirectory> NewDirectory(
    const PluginConfig& config, const common::SecretBox& box,
    std::unique_ptr<common::RedisClient> redis,
    std::unique_ptr<common::RedisClient> background_redis) {
  return std::make_shared<DeviceDirectory>(
      std::move(redis), std::move(background_redis),
      DeviceDirectory::Options{
          .capacity = config.cache_size,
          .ttl = config.cache_ttl,
          .unknown_capacity = config.unknown_cache_size,
          .unknown_ttl = config.unknown_cache_ttl,
          .max_stale = config.cache_max_stale,
          .open_secret = [opener = box](const std::string& sealed, const std::string& device_id)
              -> std::optional<std::string> {
            auto secret = opener.Open(sealed, device_id);
            return secret.ok() ? std::optional<std::string>(*std::move(secret)) : std::nullopt;
          }});
}

std::unique_ptr<ChangeWatcher> NewWatcher(common::Url url, std::chrono::milliseconds timeout,
                                          std::chrono::milliseconds recheck, AuthPlugin* plugin,
                                          MosquittoBroker* broker) {
  return std::make_unique<ChangeWatcher>(
      std::move(url), timeout, recheck,
      ChangeWatcher::Callbacks{
          .on_device_change = [plugin](const std::string& id) { plugin->OnDeviceChanged(id); },
          .on_subscription = [plugin](bool live) { plugin->OnSubscription(live); },
          .on_resync = [plugin](bool subscribed) { plugin->Resync(subscribed); },
          .log =
              [broker](bool error, const std::string& message) {
                broker->Log(error ? LogLevel::kWarning : LogLevel::kInfo, message);
              }});
}

/// Registers every callback of kCallbacks; on a failure unregisters them and returns its code.
int RegisterCallbacks(mosquitto_plugin_id_t* identifier, PluginState& state) {
  for (const auto& registration : kCallbacks) {
    const int rc = mosquitto_callback_register(identifier, registration.event,
                                               registration.callback, nullptr, &state);
    if (rc != MOSQ_ERR_SUCCESS) {
      WriteLog(LogLevel::kError, fmt::format("cannot register callback for event {}: error {}",
                                             registration.event, rc));
      Unregister(state);
      return rc;
    }
  }
  return MOSQ_ERR_SUCCESS;
}

int Init(mosquitto_plugin_id_t* identifier, void** userdata, mosquitto_opt* options,
         int option_count) {
  auto config = ParsePluginConfig(OptionPairs(options, option_count),
                                  [](const char* name) { return std::getenv(name); });
  if (!config.ok()) {
    WriteLog(LogLevel::kError, fmt::format("invalid configuration, not starting: {}",
                                           std::string(config.status().message())));
    return MOSQ_ERR_INVAL;
  }
  auto box = common::SecretBox::FromKeyText(config->secret_key);
  auto url = common::ParseUrl(config->redis_url, 6379);
  auto redis = common::RedisClient::Create(common::RedisOptions{
      .url = config->redis_url,
      .connect_timeout = config->redis_timeout,
      .command_timeout = config->redis_timeout,
      .pool_size = 2,
  });
  auto background_redis = common::RedisClient::Create(common::RedisOptions{
      .url = config->redis_url,
      .connect_timeout = config->redis_timeout,
      .command_timeout = std::max(config->redis_timeout, kBackgroundRedisTimeout),
      .pool_size = 1,
  });
  if (!box.ok() || !url.ok() || !redis.ok() || !background_redis.ok()) {
    WriteLog(LogLevel::kError, "invalid configuration, not starting: secret key or Redis URL");
    return MOSQ_ERR_INVAL;
  }

  auto state = std::make_unique<PluginState>();
  state->identifier = identifier;
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("iot_auth", std::make_shared<BrokerSink>(state->broker)));
  state->directory = NewDirectory(*config, *box, *std::move(redis), *std::move(background_redis));
  const std::string description = DescribeConfig(*config);
  const bool no_service_accounts = config->service_accounts.empty();
  const auto timeout = config->redis_timeout;
  const auto recheck = config->recheck_interval;
  state->plugin = std::make_unique<AuthPlugin>(*std::move(config), *std::move(box),
                                               state->directory, state->broker);
  state->watcher =
      NewWatcher(*std::move(url), timeout, recheck, state->plugin.get(), &state->broker);
  if (const int rc = RegisterCallbacks(identifier, *state); rc != MOSQ_ERR_SUCCESS) {
    return rc;
  }
  state->watcher->Start();
  WriteLog(LogLevel::kInfo, fmt::format("started: {}", description));
  if (no_service_accounts) {
    WriteLog(LogLevel::kWarning,
             "no service accounts configured (plugin_opt_service_accounts[_env]): only devices "
             "can connect; the platform's gateway cannot");
  }
  *userdata = state.release();
  return MOSQ_ERR_SUCCESS;
}

}  // namespace
}  // namespace iot::broker

extern "C" {

IOT_PLUGIN_EXPORT int mosquitto_plugin_version(int supported_version_count,
                                               const int* supported_versions) {
  for (int i = 0; i < supported_version_count; ++i) {
    if (supported_versions[i] == 5) {
      return 5;
    }
  }
  return -1;
}

IOT_PLUGIN_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t* identifier, void** userdata,
                                            struct mosquitto_opt* options, int option_count) {
  try {
    return iot::broker::Init(identifier, userdata, options, option_count);
  } catch (const std::exception& e) {
    iot::broker::WriteLog(iot::broker::LogLevel::kError,
                          fmt::format("initialisation failed: {}", e.what()));
    return MOSQ_ERR_UNKNOWN;
  }
}

IOT_PLUGIN_EXPORT int mosquitto_plugin_cleanup(void* userdata, struct mosquitto_opt* /*options*/,
                                               int /*option_count*/) {
  std::unique_ptr<iot::broker::PluginState> state(static_cast<iot::broker::PluginState*>(userdata));
  if (!state) {
    return MOSQ_ERR_SUCCESS;
  }
  try {
    state->watcher->Stop();
    iot::broker::Unregister(*state);
    state->broker.Flush();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("iot_auth_stopped"));
  } catch (const std::exception& e) {
    iot::broker::WriteLog(iot::broker::LogLevel::kError, fmt::format("cleanup: {}", e.what()));
  }
  return MOSQ_ERR_SUCCESS;
}

}  // extern "C"
