// Connect storm: K devices connect through the iot_auth plugin (many libmosquitto clients on
// several threads); connects/s, and the memory of the broker and the gateway with K connected.
// With --raw-mqtt-url, the same storm against a broker without the plugin, and the ratio.
#include <fmt/format.h>

#include <thread>

#include "scenarios.h"

namespace iotbench {
namespace {

nlohmann::json Storm(BenchContext& context, const Endpoint& endpoint,
                     const std::vector<DeviceCredentials>& devices, const std::string& broker,
                     bool with_gateway) {
  nlohmann::json out;
  const nlohmann::json broker_before = context.Rss(broker);
  const nlohmann::json gateway_before = context.Rss("device-gateway");
  Fleet fleet(context.FleetFor(endpoint), devices);
  const auto started = Clock::now();
  const ConnectResult result = fleet.Connect(context.Deadline());
  const auto connected_at = Clock::now();
  out["devices"] = devices.size();
  out["connected"] = result.connected;
  out["refused"] = result.refused;
  if (!result.first_error.empty()) {
    out["first_error"] = result.first_error;
  }
  out["seconds"] = Round(result.seconds, 3);
  out["connects_per_s"] =
      result.seconds > 0
          ? nlohmann::json(Round(static_cast<double>(result.connected) / result.seconds))
          : NotAvailable("no device connected");
  out["connect_latency"] = result.latency;
  const auto memory = [&](const std::string& name, const nlohmann::json& before) {
    nlohmann::json m;
    m["rss_before_bytes"] = before;
    m["rss_connected_bytes"] = context.Rss(name);
    if (before.is_number() && m["rss_connected_bytes"].is_number() && result.connected > 0) {
      m["bytes_per_connection"] =
          Round((m["rss_connected_bytes"].get<double>() - before.get<double>()) /
                    static_cast<double>(result.connected),
                0);
    }
    return m;
  };
  out["broker_memory"] = memory(broker, broker_before);
  if (with_gateway) {
    // The gateway works through the presence events after the storm: look again a little later.
    std::this_thread::sleep_for(std::chrono::seconds(2));
    out["gateway_memory"] = memory("device-gateway", gateway_before);
    out["gateway_memory"]["rss_2s_later_bytes"] = context.Rss("device-gateway");
  }
  out["cpu"] = context.sampler.Summary(started, connected_at);
  fleet.Disconnect();
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
  out["not_connected"] = static_cast<std::size_t>(config.connections) -
                         out["platform"]["connected"].get<std::size_t>();
  return out;
}

}  // namespace iotbench
