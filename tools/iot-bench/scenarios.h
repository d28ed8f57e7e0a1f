#pragma once

// The scenarios of iot-bench. Each creates its own devices (in the run's product),
// measures, and returns its part of the JSON report; a figure it cannot produce (a service or
// API not there yet, no broker service account) is {"not_available": reason}.

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api.h"
#include "fleet.h"
#include "procstat.h"

namespace iot::common {
class MqttClient;
struct MqttMessage;
}  // namespace iot::common

namespace iotbench {

struct BenchConfig {
  std::string mqtt_url = "mqtt://127.0.0.1:1883";
  std::string raw_mqtt_url;   ///< a second broker without the plugin (connections); optional
  std::string mqtt_username;  ///< broker service account (raw subscriber and requester)
  std::string mqtt_password;
  std::string api_key;
  std::string thing_model_addr = "127.0.0.1:50052";
  std::string gateway_addr = "127.0.0.1:50051";
  std::string command_dispatch_addr = "127.0.0.1:50053";
  std::string shadow_addr = "127.0.0.1:50054";
  std::string rule_forwarding_addr = "127.0.0.1:50055";
  /// "iotda", "alink" or "both": the devices of connections and ingest (docs/alink.md).
  std::string dialect = "iotda";
  int threads = 4;  ///< device worker threads
  int connections = 1000;
  int ingest_devices = 1000;
  int ingest_messages = 100;  ///< reports per device
  int publish_window = 10;    ///< QoS 1 reports in flight per device
  double publish_rate = 40;   ///< reports per second per device (below the gateway's limit)
  int commands = 2000;
  int callers = 10;
  /// The gateway rate-limits each device's uplink, responses included (50/s by default): 40
  /// devices answer 1,000 commands/s at 25/s each.
  int command_devices = 40;
  double scenario_timeout_seconds = 300;
  double stall_seconds = 15;  ///< give up waiting for arrivals after this long without progress
  // faults (devices and rate: ingest_devices and publish_rate, with their own defaults)
  std::vector<std::string> faults;  ///< "{target}:{kill|term}", in order
  double fault_period = 30;         ///< seconds of reporting per phase; the fault after a third
  std::string restart_command;      ///< brings back what a fault took down (/bin/sh -c)
  std::string redis_url;            ///< the stack's Redis: its pid, its AOF settings
  std::string pg_url;           ///< the stack's PostgreSQL: its pids, settings, recorded commands
  std::string mosquitto_conf;   ///< the broker's configuration file: its autosave settings
  std::string gateway_metrics;  ///< host:port of the gateway's /metrics: its rejections
};

struct Endpoint {
  std::string host;
  int port = 0;
};

struct BenchContext {
  const BenchConfig& config;
  ThingModelClient& thing_model;
  std::string product_id;
  CpuSampler& sampler;
  std::map<std::string, pid_t> pids;  ///< watched processes by name
  Endpoint broker;
  Endpoint raw_broker;                ///< port 0: none
  Dialect dialect = Dialect::kIotda;  ///< of product_id and every device of the context
  std::string service_id = "bench";   ///< the model's service of the reports (alink: "default")

  [[nodiscard]] Clock::time_point Deadline() const;
  [[nodiscard]] FleetOptions FleetFor(const Endpoint& endpoint) const;
  [[nodiscard]] Clock::duration Stall() const;
  /// The report of the context's dialect: ReportPayload() or AlinkReportPayload().
  [[nodiscard]] std::string Report(std::int64_t seq, int phase, std::int64_t sent_unix_ms) const;
  /// The uplink topic of its reports after `iot/up/{partition}/{device_id}/`.
  [[nodiscard]] std::string ReportSuffix() const;
  /// An MQTT v5 client of the broker service account, subscribed to `{prefix}+/{suffix}` for
  /// every uplink prefix, handing messages to `handler`; or the reason there is none. Connect it
  /// before any device fleet: libmosquitto's own loop (used by MqttClient) select()s, which fails
  /// for descriptors beyond FD_SETSIZE (1024), and a thousand devices use those up.
  absl::StatusOr<std::unique_ptr<iot::common::MqttClient>> SubscribedClient(
      const std::string& name, const std::string& suffix,
      std::function<void(const iot::common::MqttMessage&)> handler) const;
  /// RSS in bytes of the watched process `name`, or a NotAvailable.
  [[nodiscard]] nlohmann::json Rss(const std::string& name) const;
};

/// The run's product model: service "bench" with 10 readable properties (seq, phase, ts and 7
/// measurements; a report is ~300 bytes) and the command "ping".
nlohmann::json BenchProductModel(const std::string& product_id);

/// The run's alink product: the same 10 properties as a TSL of productKey `product_key` (seq and
/// phase int, ts and the measurements double, all accessMode r), in the default function block.
nlohmann::json BenchTsl(const std::string& product_key);

/// The ~300-byte report of the bench's devices.
std::string ReportPayload(std::int64_t seq, int phase, std::int64_t sent_unix_ms);

/// The same properties as an Alink property post:
/// `{"id":"{seq}","version":"1.0","params":{...},"method":"thing.event.property.post"}`.
std::string AlinkReportPayload(std::int64_t seq, int phase, std::int64_t sent_unix_ms);

/// The properties object of a report (or of the envelope/selection holding one): the first
/// object with "seq" and "phase" found in `json`; nullptr when none.
const nlohmann::json* FindBenchProperties(const nlohmann::json& json);

/// The broker delivers device uplink to service accounts on
/// `iot/up/{partition}/{device_id}/{rest}` (the plugin moves it off `$oc/devices/...`,
/// broker/README.md); both spellings are subscribed, with these filter prefixes.
inline constexpr const char* kUplinkFilterPrefixes[] = {"iot/up/+/", "$oc/devices/"};

/// The device id of an uplink topic in either spelling ("" for other topics).
std::string UplinkDevice(const std::string& topic);

/// The device index of `{product}_{prefix}{n}` (n is 1-based), or -1.
long DeviceIndex(const std::string& device_id, const std::string& product_id,
                 const std::string& prefix);

nlohmann::json RunConnections(BenchContext& context);
nlohmann::json RunIngest(BenchContext& context);
nlohmann::json RunCommands(BenchContext& context);
nlohmann::json RunFaults(BenchContext& context);

}  // namespace iotbench
