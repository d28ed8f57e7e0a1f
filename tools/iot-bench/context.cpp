#include <fmt/chrono.h>
#include <fmt/format.h>

#include <charconv>

#include "iot/common/mqtt.h"
#include "scenarios.h"

namespace iotbench {

Clock::time_point BenchContext::Deadline() const {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(config.scenario_timeout_seconds));
}

FleetOptions BenchContext::FleetFor(const Endpoint& endpoint) const {
  return FleetOptions{.host = endpoint.host,
                      .port = endpoint.port,
                      .threads = config.threads,
                      .connect_window = 100,
                      .publish_window = config.publish_window,
                      .publish_rate = config.publish_rate,
                      .answer_commands = false,
                      .dialect = dialect};
}

std::string BenchContext::Report(std::int64_t seq, int phase, std::int64_t sent_unix_ms) const {
  return dialect == Dialect::kAlink ? AlinkReportPayload(seq, phase, sent_unix_ms)
                                    : ReportPayload(seq, phase, sent_unix_ms);
}

std::string BenchContext::ReportSuffix() const {
  return dialect == Dialect::kAlink
             ? fmt::format("alink/sys/{}/+/thing/event/property/post", product_id)
             : std::string("sys/properties/report");
}

Clock::duration BenchContext::Stall() const {
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(config.stall_seconds));
}

absl::StatusOr<std::unique_ptr<iot::common::MqttClient>> BenchContext::SubscribedClient(
    const std::string& name, const std::string& suffix,
    std::function<void(const iot::common::MqttMessage&)> handler) const {
  if (config.mqtt_username.empty()) {
    return absl::FailedPreconditionError(
        "no broker service account (--mqtt-username/--mqtt-password or "
        "IOT_BENCH_MQTT_USERNAME/IOT_BENCH_MQTT_PASSWORD)");
  }
  auto client = iot::common::MqttClient::Create(
      iot::common::MqttOptions{.url = fmt::format("mqtt://{}:{}", broker.host, broker.port),
                               .client_id = fmt::format("iot-bench-{}-{}", name, product_id),
                               .username = config.mqtt_username,
                               .password = config.mqtt_password,
                               .clean_start = true,
                               .session_expiry_seconds = 0,
                               .keepalive_seconds = 30,
                               .max_inflight = 1000});
  if (!client.ok()) {
    return client.status();
  }
  (*client)->SetMessageHandler(std::move(handler));
  for (const std::string prefix : kUplinkFilterPrefixes) {
    (void)(*client)->Subscribe(fmt::format("{}+/{}", prefix, suffix), 1);
  }
  if (!(*client)->Start().ok() || !(*client)->WaitSubscribed(std::chrono::seconds(10))) {
    return absl::UnavailableError(fmt::format(
        "the {} could not connect and subscribe with the broker service account", name));
  }
  return client;
}

nlohmann::json BenchContext::Rss(const std::string& name) const {
  const auto it = pids.find(name);
  if (it == pids.end()) {
    return NotAvailable(name + " process not found (not running, or not listening where given)");
  }
  const auto bytes = ResidentBytes(it->second);
  if (!bytes) {
    return NotAvailable(fmt::format("{} (pid {}) has exited", name, it->second));
  }
  return *bytes;
}

namespace {

/// The ten properties of a bench report, one table for both dialects: the type in the IoTDA
/// product model and in the Alink TSL (whose `int` is 32 bits, hence seq's narrower bound), and
/// the range.
struct BenchProperty {
  const char* name;
  const char* iotda_type;
  const char* tsl_type;
  const char* min;
  const char* max;
};
constexpr BenchProperty kBenchProperties[] = {
    {"seq", "long", "int", "0", "2147483647"},
    {"phase", "int", "int", "0", "99"},
    {"ts", "long", "double", "0", "9007199254740991"},
    {"voltage", "decimal", "double", "0", "1000"},
    {"current", "decimal", "double", "0", "1000"},
    {"active_power", "decimal", "double", "0", "1000000"},
    {"total_energy", "decimal", "double", "0", "100000000"},
    {"temperature", "decimal", "double", "-50", "150"},
    {"humidity", "decimal", "double", "0", "100"},
    {"line_frequency", "decimal", "double", "0", "100"},
};

}  // namespace

nlohmann::json BenchProductModel(const std::string& product_id) {
  using Json = nlohmann::json;
  Json properties = Json::array();
  for (const BenchProperty& p : kBenchProperties) {
    properties.push_back({{"property_name", p.name},
                          {"data_type", p.iotda_type},
                          {"required", false},
                          {"min", p.min},
                          {"max", p.max},
                          {"method", "R"}});
  }
  Json ping = {{"command_name", "ping"},
               {"paras", Json::array({{{"para_name", "value"},
                                       {"data_type", "int"},
                                       {"required", false},
                                       {"min", "0"},
                                       {"max", "2147483647"}}})},
               {"responses", Json::array({{{"response_name", "ping_response"},
                                           {"paras", Json::array({{{"para_name", "result"},
                                                                   {"data_type", "string"},
                                                                   {"max_length", 16}}})}}})}};
  return {{"product_id", product_id},
          {"name", "iot-bench " + product_id},
          {"device_type", "BenchMeter"},
          {"protocol_type", "MQTT"},
          {"data_format", "json"},
          {"manufacturer_name", "iot-bench"},
          {"description", "created and deleted by iot-bench"},
          {"service_capabilities", Json::array({{{"service_id", "bench"},
                                                 {"service_type", "bench"},
                                                 {"option", "Mandatory"},
                                                 {"properties", properties},
                                                 {"commands", Json::array({ping})}}})}};
}

nlohmann::json BenchTsl(const std::string& product_key) {
  using Json = nlohmann::json;
  Json properties = Json::array();
  for (const BenchProperty& p : kBenchProperties) {
    properties.push_back(
        {{"identifier", p.name},
         {"name", p.name},
         {"accessMode", "r"},
         {"required", false},
         {"dataType", {{"type", p.tsl_type}, {"specs", {{"min", p.min}, {"max", p.max}}}}}});
  }
  return {{"schema", "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json"},
          {"profile",
           {{"version", "1.0"}, {"productKey", product_key}, {"productName", "iot-bench alink"}}},
          {"properties", properties},
          {"events", Json::array()},
          {"services", Json::array()}};
}

namespace {

/// The properties object of a report: the same for both dialects.
std::string ReportProperties(std::int64_t seq, int phase, std::int64_t sent_unix_ms) {
  // Values vary with seq but cost no random numbers: the bench must not be the bottleneck.
  const auto v = static_cast<double>(seq % 1000);
  return fmt::format(
      R"({{"seq":{},"phase":{},"ts":{},"voltage":{:.4f},"current":{:.5f},"active_power":{:.4f},)"
      R"("total_energy":{:.5f},"temperature":{:.4f},"humidity":{:.4f},"line_frequency":{:.5f}}})",
      seq, phase, sent_unix_ms, 220 + v / 100, 10 + v / 1000, 2200 + v, 12345678.9 + v,
      20 + v / 100, 40 + v / 50, 49.95 + v / 10000);
}

}  // namespace

std::string ReportPayload(std::int64_t seq, int phase, std::int64_t sent_unix_ms) {
  return fmt::format(
      R"({{"services":[{{"service_id":"bench","properties":{},"event_time":"{}"}}]}})",
      ReportProperties(seq, phase, sent_unix_ms),
      fmt::format("{:%Y%m%dT%H%M%SZ}", fmt::gmtime(sent_unix_ms / 1000)));
}

std::string AlinkReportPayload(std::int64_t seq, int phase, std::int64_t sent_unix_ms) {
  return fmt::format(
      R"({{"id":"{}","version":"1.0","params":{},"method":"thing.event.property.post"}})", seq,
      ReportProperties(seq, phase, sent_unix_ms));
}

const nlohmann::json* FindBenchProperties(const nlohmann::json& json) {
  if (json.is_object()) {
    if (json.contains("seq") && json.contains("phase")) {
      return &json;
    }
    for (const auto& [key, value] : json.items()) {
      if (const auto* found = FindBenchProperties(value)) {
        return found;
      }
    }
  } else if (json.is_array()) {
    for (const auto& value : json) {
      if (const auto* found = FindBenchProperties(value)) {
        return found;
      }
    }
  }
  return nullptr;
}

std::string UplinkDevice(const std::string& topic) {
  size_t start = std::string::npos;
  if (topic.starts_with("iot/up/")) {
    start = topic.find('/', std::string_view("iot/up/").size());  // after the partition
    start = start == std::string::npos ? start : start + 1;
  } else if (topic.starts_with("$oc/devices/")) {
    start = std::string_view("$oc/devices/").size();
  }
  const auto end = start == std::string::npos ? start : topic.find('/', start);
  return end == std::string::npos ? std::string() : topic.substr(start, end - start);
}

long DeviceIndex(const std::string& device_id, const std::string& product_id,
                 const std::string& prefix) {
  const std::string head = product_id + "_" + prefix;
  if (device_id.rfind(head, 0) != 0) {
    return -1;
  }
  long n = 0;
  const char* begin = device_id.data() + head.size();
  const char* end = device_id.data() + device_id.size();
  const auto [ptr, ec] = std::from_chars(begin, end, n);
  if (ec != std::errc() || ptr != end || n < 1) {
    return -1;
  }
  return n - 1;
}

}  // namespace iotbench
