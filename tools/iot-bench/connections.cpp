// Connect storm: K devices (IoTDA or Alink, the context's dialect) connect through the iot_auth
// plugin (raw MQTT CONNECTs, one socket each, 64 awaited at a time — under mosquitto's listen
// backlog of 100, so that no SYN is dropped and retried a second later); connects/s, and the memory
// of the broker and the gateway with K connected. With --raw-mqtt-url, the same storm against a
// broker without the plugin, and the ratio.
#include <fmt/format.h>

#include <thread>

#include "connect_storm.h"
#include "scenarios.h"

namespace iotbench {
namespace {

constexpr int kConnectWindow = 64;

nlohmann::json Storm(BenchContext& context, const Endpoint& endpoint,
                     const std::vector<DeviceCredentials>& devices, const std::string& broker,
                     bool with_gateway) {
  nlohmann::json out;
  const nlohmann::json broker_before = context.Rss(broker);
  const nlohmann::json gateway_before = context.Rss("device-gateway");
  std::vector<iot::broker_bench::StormClient> clients;
  clients.reserve(devices.size());
  for (const auto& device : devices) {
    DeviceLogin login = LoginFor(device, context.dialect);
    clients.push_back({.client_id = std::move(login.client_id),
                       .username = std::move(login.username),
                       .password = std::move(login.password)});
  }
  const auto started = Clock::now();
  auto connected_at = started;
  const auto timeout =
      std::max(std::chrono::milliseconds(1000),
               std::chrono::duration_cast<std::chrono::milliseconds>(context.Deadline() - started));
  const auto result = iot::broker_bench::ConnectStorm(
      static_cast<uint16_t>(endpoint.port), clients, kConnectWindow, timeout,
      [&](const iot::broker_bench::StormResult& storm) {
        connected_at = Clock::now();
        const auto memory = [&](const std::string& name, const nlohmann::json& before) {
          nlohmann::json m;
          m["rss_before_bytes"] = before;
          m["rss_connected_bytes"] = context.Rss(name);
          if (before.is_number() && m["rss_connected_bytes"].is_number() && storm.accepted > 0) {
            m["bytes_per_connection"] =
                Round((m["rss_connected_bytes"].get<double>() - before.get<double>()) /
                          static_cast<double>(storm.accepted),
                      0);
          }
          return m;
        };
        out["broker_memory"] = memory(broker, broker_before);
        if (with_gateway) {
          // The gateway works through the presence events after the storm: look again later.
          std::this_thread::sleep_for(std::chrono::seconds(2));
          out["gateway_memory"] = memory("device-gateway", gateway_before);
        }
      });
  out["devices"] = devices.size();
  out["connected"] = result.accepted;
  out["refused"] = result.refused;
  out["connects_in_flight"] = kConnectWindow;
  out["connects_per_s"] = result.per_second > 0 ? nlohmann::json(Round(result.per_second))
                                                : NotAvailable("no device connected");
  Latencies latency;
  for (const auto& us : result.latencies) {
    latency.Add(static_cast<double>(us.count()) / 1000.0);
  }
  out["connect_latency"] = latency.Summary();
  out["cpu"] = context.sampler.Summary(started, connected_at);
  return out;
}

}  // namespace

nlohmann::json RunConnections(BenchContext& context) {
  const BenchConfig& config = context.config;
  nlohmann::json out;
  out["devices"] = config.connections;
  auto devices = context.thing_model.AddDevices(context.product_id, "c", config.connections, 8);
  if (!devices.ok()) {
    out["error"] = "creating devices: " + Describe(devices.status());
    return out;
  }
  out["platform"] = Storm(context, context.broker, *devices, "mosquitto", true);
  if (context.raw_broker.port == 0) {
    out["raw"] = NotAvailable("no broker without the plugin given (--raw-mqtt-url)");
  } else {
    out["raw"] = Storm(context, context.raw_broker, *devices, "mosquitto-raw", false);
  }
  out["ratio_connects_platform_to_raw"] =
      Ratio(out["platform"]["connects_per_s"],
            out["raw"].contains("connects_per_s") ? out["raw"]["connects_per_s"] : out["raw"]);
  out["not_connected"] = config.connections - out["platform"]["connected"].get<int>();
  return out;
}

}  // namespace iotbench
