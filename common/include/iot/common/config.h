#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "iot/common/json_limits.h"

namespace iot::common {

/// Thrown at start-up for a bad or missing configuration value; the message names every
/// offending variable.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Reads typed values from environment variables. Errors are collected, not thrown one by
/// one, so a misconfigured process reports every bad variable at once (Finish()).
class EnvReader {
 public:
  using Lookup = std::function<std::optional<std::string>(const std::string&)>;

  /// Reads the process environment.
  EnvReader();
  /// Reads from `lookup` (tests).
  explicit EnvReader(Lookup lookup);

  std::string String(const std::string& name, std::string_view fallback);
  /// A value that must be set and non-empty.
  std::string Required(const std::string& name);
  int64_t Int(const std::string& name, int64_t fallback, int64_t min, int64_t max);
  /// 0..65535; 0 means "any free port" (tests).
  uint16_t Port(const std::string& name, uint16_t fallback);
  bool Bool(const std::string& name, bool fallback);
  /// "250ms", "5s", "2m", "1h", "1d"; a bare number is seconds.
  std::chrono::milliseconds Duration(const std::string& name, std::chrono::milliseconds fallback);
  /// One of trace, debug, info, warn, error, critical, off.
  std::string LogLevel(const std::string& name, std::string_view fallback);
  /// One of `allowed`.
  std::string Enum(const std::string& name, std::string_view fallback,
                   const std::vector<std::string_view>& allowed);

  /// Records a problem found by the caller's own validation.
  void AddError(const std::string& name, const std::string& problem);
  /// Throws ConfigError naming every bad variable, if any.
  void Finish() const;
  [[nodiscard]] const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::optional<std::string> Get(const std::string& name) const;

  Lookup lookup_;
  std::vector<std::string> errors_;
};

/// What every service process reads: IOT_<SERVICE>_* for its own ports and limits, shared
/// IOT_LOG_LEVEL (overridable per service).
struct ServerConfig {
  std::string service;  ///< e.g. "shadow"; in logs and metric labels
  std::string listen_address = "0.0.0.0";
  uint16_t grpc_port = 0;
  uint16_t metrics_port = 0;
  std::string log_level = "info";
  std::chrono::milliseconds drain_timeout{10'000};
  std::chrono::milliseconds probe_interval{2'000};
  /// Bounds on untrusted JSON (device payloads, `*_json` API fields): shared IOT_JSON_MAX_DEPTH
  /// and IOT_JSON_MAX_BYTES, the same for every service (json_limits.h).
  JsonLimits json;

  /// Reads `IOT_<prefix>_LISTEN_ADDRESS`, `_GRPC_PORT`, `_METRICS_PORT`, `_LOG_LEVEL`
  /// (default IOT_LOG_LEVEL), `_DRAIN_TIMEOUT`, `_PROBE_INTERVAL`, and the shared
  /// IOT_JSON_MAX_DEPTH, IOT_JSON_MAX_BYTES.
  static ServerConfig Read(EnvReader& env, std::string service, const std::string& prefix,
                           uint16_t default_grpc_port, uint16_t default_metrics_port);
};

/// Connection settings shared by the services: IOT_PG_URL, IOT_REDIS_URL, IOT_MQTT_URL.
struct BackendConfig {
  std::string pg_url;
  int64_t pg_pool_size = 4;
  std::string redis_url;
  std::string mqtt_url;
  std::string mqtt_username;
  std::string mqtt_password;
  /// IOT_MQTT_CA_FILE: for `mqtts://`, the CAs to trust (PEM); empty: the system's.
  std::string mqtt_ca_file;
  /// Unique per replica (persistent sessions are keyed by it): default `<service>-<hostname>`.
  std::string mqtt_client_id;
  /// With > 0 the MQTT session is persistent (clean start off): the broker queues QoS 1
  /// messages for this long while the service is away.
  std::chrono::milliseconds mqtt_session_expiry{0};

  /// Reads the shared URLs and `<prefix>_PG_POOL_SIZE`, `<prefix>_MQTT_USERNAME`,
  /// `<prefix>_MQTT_PASSWORD`, `<prefix>_MQTT_CLIENT_ID`, `<prefix>_MQTT_SESSION_EXPIRY`
  /// (default `default_session_expiry`).
  static BackendConfig Read(EnvReader& env, const std::string& prefix,
                            const std::string& service = "iot",
                            std::chrono::milliseconds default_session_expiry = {});
};

}  // namespace iot::common
