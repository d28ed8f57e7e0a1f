#pragma once

// Many simulated devices in one process: one libmosquitto client (MQTT 3.1.1, the IoTDA or the
// Alink client-id/password signing, docs/alink.md) per device, spread over a few worker threads
// that each poll() their clients' sockets. The bench drives the fleet in phases from its main
// thread: connect every device, publish a fixed number of QoS 1 reports per device, disconnect.
// Devices answer the commands they receive at once when asked to.
//
// A device whose connection breaks after it had connected (the broker restarted, a keepalive
// timed out) reconnects with backoff (200 ms doubling to 2 s) and, as a device SDK does, sends
// again every QoS 1 report that was not acknowledged (libmosquitto keeps them and resends them
// with DUP after the new CONNACK). So "acknowledged" (a PUBACK received) is the count of
// reports the platform owes, whatever happened to the connection.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "stats.h"

namespace iotbench {

/// `YYYYMMDDHH` (UTC) for a device's client id and the password's HMAC key.
std::string HourStamp();

struct DeviceCredentials {
  std::string device_id;
  std::string secret;
  std::string product_id;  ///< an alink product's productKey
  std::string node_id;     ///< an alink device's deviceName
};

/// The device protocol a fleet speaks: Huawei IoTDA's or Alibaba's Alink (docs/alink.md).
enum class Dialect { kIotda, kAlink };

/// "iotda" or "alink".
const char* DialectName(Dialect dialect);

/// What a device connects with.
struct DeviceLogin {
  std::string client_id;
  std::string username;
  std::string password;
};

/// IoTDA: client id `{device_id}_0_0_{YYYYMMDDHH}`, username the device id, password
/// HMAC-SHA256(key = the hour, the secret). Alink (plain TCP, as the SDKs connect): client id
/// `{pk}.{dn}|securemode=3,signmethod=hmacsha256,timestamp={ms}|`, username `{dn}&{pk}`,
/// password hex HMAC-SHA256(deviceSecret,
/// "clientId{pk}.{dn}deviceName{dn}productKey{pk}timestamp{ms}").
DeviceLogin LoginFor(const DeviceCredentials& device, Dialect dialect);

/// Where a device posts its property reports: `$oc/devices/{device_id}/sys/properties/report`
/// or `/sys/{pk}/{dn}/thing/event/property/post`.
std::string ReportTopic(const DeviceCredentials& device, Dialect dialect);

struct FleetOptions {
  std::string host = "127.0.0.1";
  int port = 1883;
  int threads = 4;
  int connect_window = 100;  ///< CONNACKs awaited at once per thread
  int publish_window = 10;   ///< QoS 1 reports in flight per device
  /// Reports per second per device (0: as fast as the window allows). The gateway rejects a
  /// device's uplink beyond its rate limit (IOT_DEVICE_GATEWAY_RATE_LIMIT, 50/s by default).
  double publish_rate = 0;
  bool answer_commands = false;
  Dialect dialect = Dialect::kIotda;
};

/// The payload of report `seq` (0-based) of device `index`; called on worker threads.
using PayloadFn = std::function<std::string(std::size_t index, int seq)>;
/// Called (on a worker thread) when report `seq` of device `index` is acknowledged (PUBACK).
using AckedFn = std::function<void(std::size_t index, int seq)>;

struct ConnectResult {
  std::size_t connected = 0;
  std::size_t refused = 0;  ///< CONNACK refusals, TCP failures and CONNACK timeouts
  double seconds = 0;       ///< first connect started .. last CONNACK
  nlohmann::json latency;   ///< per connect (Latencies::Summary)
  std::string first_error;
};

struct PublishResult {
  std::uint64_t sent = 0;
  std::uint64_t acked = 0;
  double seconds = 0;  ///< first publish .. last PUBACK
  bool timed_out = false;
};

class Fleet {
 public:
  Fleet(FleetOptions options, std::vector<DeviceCredentials> devices);
  /// Disconnect()s.
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  /// Connects every device (at most connect_window CONNACKs awaited per thread) and returns
  /// when all have answered or `deadline` passed.
  ConnectResult Connect(Clock::time_point deadline);
  /// Every connected device publishes `per_device` reports on its report topic (ReportTopic) at
  /// QoS 1; returns when all are acknowledged or `deadline` passed. `acked`, if set, hears of
  /// every acknowledgement.
  PublishResult Publish(int per_device, PayloadFn payload, Clock::time_point deadline,
                        AckedFn acked = nullptr);
  /// Disconnects everyone and stops the worker threads. Idempotent.
  void Disconnect();

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::uint64_t commands_answered() const;
  /// Connections that broke after their device had connected.
  [[nodiscard]] std::uint64_t connections_lost() const;
  /// Successful reconnects of devices whose connection broke.
  [[nodiscard]] std::uint64_t reconnects() const;
  /// Reports in flight (sent, not acknowledged) when their device reconnected: sent again.
  [[nodiscard]] std::uint64_t republished() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iotbench
