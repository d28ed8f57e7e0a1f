#pragma once

// Platform processes for integration tests: a real thing-model on a free port, and the
// mosquitto.conf lines that load the real iot_auth plugin.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "iot/testing/process.h"

namespace iot::testing {

struct ThingModelProcessOptions {
  std::string redis_url;
  std::string secret_key;   ///< IOT_SECRET_KEY (64 hex)
  std::string admin_key;    ///< IOT_THING_MODEL_BOOTSTRAP_API_KEY
  std::string service_key;  ///< IOT_SERVICE_API_KEY; empty: none
  std::string pg_url;       ///< empty: a new test database (CreateTestDatabase)
};

/// The thing-model binary with its log in a temp dir; SIGTERM on destruction.
class ThingModelProcess {
 public:
  explicit ThingModelProcess(ThingModelProcessOptions options);
  ~ThingModelProcess();

  /// Polls gRPC health until SERVING.
  [[nodiscard]] bool WaitServing(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  [[nodiscard]] const std::string& address() const { return address_; }
  [[nodiscard]] const std::string& pg_url() const { return options_.pg_url; }
  Process& process() { return *process_; }

 private:
  ThingModelProcessOptions options_;
  TempDir dir_{"iot-thing-model"};
  std::string address_;
  std::unique_ptr<Process> process_;
};

/// Any platform service binary (device-gateway, shadow, command-dispatch, rule-forwarding, ...)
/// on free gRPC and metrics ports, log in a temp dir; SIGTERM on destruction. The caller gives
/// every variable the service needs (IOT_PG_URL, IOT_REDIS_URL, IOT_MQTT_URL, peer addresses);
/// `<env_prefix>_GRPC_PORT`, `_METRICS_PORT`, `_LISTEN_ADDRESS` and `_PROBE_INTERVAL` are set here.
struct ServiceProcessOptions {
  std::string binary;      ///< e.g. "shadow" (found next to the test executable)
  std::string env_prefix;  ///< e.g. "IOT_SHADOW"
  std::map<std::string, std::string> env;
  std::vector<std::string> args;  ///< extra command-line arguments
  /// 0: a free port. Set it when a peer needs the address before this service starts (e.g.
  /// the gateway and shadow each need the other's): take one from FreePort().
  uint16_t grpc_port = 0;
};

class ServiceProcess {
 public:
  explicit ServiceProcess(ServiceProcessOptions options);
  ~ServiceProcess();
  ServiceProcess(const ServiceProcess&) = delete;
  ServiceProcess& operator=(const ServiceProcess&) = delete;

  /// Polls gRPC health (readiness) until SERVING.
  [[nodiscard]] bool WaitServing(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  [[nodiscard]] const std::string& address() const { return address_; }
  [[nodiscard]] uint16_t grpc_port() const { return grpc_port_; }
  [[nodiscard]] uint16_t metrics_port() const { return metrics_port_; }
  /// The Prometheus text of its /metrics ("" if unreachable).
  [[nodiscard]] std::string Metrics() const;
  Process& process() { return *process_; }
  /// Stops it (SIGTERM, or SIGKILL when `kill`) and starts it again on the same ports.
  void Restart(bool kill = false);

 private:
  void Start();

  ServiceProcessOptions options_;
  TempDir dir_;
  uint16_t grpc_port_ = 0;
  uint16_t metrics_port_ = 0;
  std::string address_;
  int starts_ = 0;
  std::unique_ptr<Process> process_;
};

/// A broker service account entry `name:salt:sha256hex(salt+password)`.
std::string ServiceAccountEntry(const std::string& name, const std::string& salt,
                                const std::string& password);

/// MQTT credentials of a device, signed as Huawei's device SDKs sign them (DESIGN.md §3).
struct DeviceCredentials {
  std::string client_id;  ///< `{device_id}_0_0_{YYYYMMDDHH}`: sign type 0, the current UTC hour
  std::string username;   ///< the device id
  std::string password;   ///< hex HMAC-SHA256(key = the hour text, message = the secret)
};
DeviceCredentials SignDevice(const std::string& device_id, const std::string& secret);

/// The whole content of a text file ("" when it cannot be read).
std::string ReadTextFile(const std::filesystem::path& path);

/// mosquitto.conf lines loading build/lib/libiot_auth.so (no anonymous clients) with the
/// given Redis, device-secret key and service accounts (may be empty).
std::string AuthPluginConfig(const std::string& redis_url, const std::string& secret_key,
                             const std::string& service_accounts = {});

}  // namespace iot::testing
