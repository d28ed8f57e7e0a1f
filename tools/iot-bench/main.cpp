// iot-bench: load and latency benchmark of a running platform (DESIGN.md §1, docs/benchmarks.md).
// It starts nothing: it drives the stack named by its flags (or the IOT_* environment), creates
// its own product and devices through thing-model and deletes them afterwards, and prints a
// text report and writes a JSON one. Loopback only; every scenario is bounded in count and time.
//
//   IOTCTL_API_KEY=... iot-bench --scenario all --json bench.json
//
// `--scenario faults` (never part of `all`) kills and restarts parts of the stack: see faults.cpp.
//
// Exit codes: 0 done, no loss; 1 loss or a scenario failed; 2 usage; 3 thing-model unreachable.
#include <fmt/format.h>
#include <mosquitto.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "iot/common/url.h"
#include "scenarios.h"
#include "stack_control.h"

namespace {

using iotbench::BenchConfig;
using Json = nlohmann::json;

enum ExitCode : int { kOk = 0, kFailed = 1, kUsage = 2, kUnreachable = 3 };

std::string Env(const char* name, const std::string& fallback = {}) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

/// host:port of a gRPC address.
std::pair<std::string, int> SplitAddress(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return {address, 0};
  }
  return {address.substr(0, colon), std::atoi(address.c_str() + colon + 1)};
}

std::string RandomSuffix() {
  std::random_device device;
  return fmt::format("{:08x}", std::uniform_int_distribution<std::uint32_t>()(device));
}

constexpr rlim_t kFilesPerDevice = 3;
constexpr rlim_t kReservedFiles = 256;  ///< gRPC channels, /proc reads, the service clients

/// Lets one process hold many device connections: each libmosquitto client holds three
/// descriptors (its socket and a socket pair), so 10,000 devices need ~30,000. Raising the hard
/// limit works as root (CAP_SYS_RESOURCE); otherwise the soft limit goes up to the hard one.
/// Returns the devices one run can hold at once with the limit it got.
std::size_t RaiseFileLimit() {
  constexpr rlim_t kWanted = 65536;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return 0;
  }
  if (limit.rlim_max < kWanted) {
    const rlimit raised{.rlim_cur = kWanted, .rlim_max = kWanted};
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      return (kWanted - kReservedFiles) / kFilesPerDevice;
    }
  }
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  ::getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur > kReservedFiles ? (limit.rlim_cur - kReservedFiles) / kFilesPerDevice : 0;
}

/// The text report: the JSON report as an indented outline.
void PrintText(const Json& json, std::ostream& out, int depth = 0) {
  const std::string indent(static_cast<std::size_t>(depth) * 2, ' ');
  for (const auto& [key, value] : json.items()) {
    if (value.is_object() && value.contains("not_available") && value.size() == 1) {
      out << indent << key << ": not available: " << value["not_available"].get<std::string>()
          << "\n";
    } else if (value.is_object()) {
      out << indent << key << ":\n";
      PrintText(value, out, depth + 1);
    } else if (value.is_array()) {
      std::string items;
      for (const auto& item : value) {
        items += (items.empty() ? "" : ", ") +
                 (item.is_string() ? item.get<std::string>() : item.dump());
      }
      out << indent << key << ": [" << items << "]\n";
    } else {
      out << indent << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump())
          << "\n";
    }
  }
}

/// Loss anywhere in the report ("lost" > 0, devices that did not connect, commands stuck), or an
/// error. A fault whose loss is bounded by the configuration says "within_bound": true.
bool HasLoss(const Json& json) {
  if (json.is_array()) {
    return std::any_of(json.begin(), json.end(), [](const Json& item) { return HasLoss(item); });
  }
  if (!json.is_object() || json.value("within_bound", false)) {
    return false;
  }
  for (const auto& [key, value] : json.items()) {
    if ((key == "lost" || key == "not_connected" || key == "stuck") && value.is_number() &&
        value.get<double>() > 0) {
      return true;
    }
    if (key == "error" || HasLoss(value)) {
      return true;
    }
  }
  return false;
}

std::optional<iotbench::Endpoint> ParseBroker(const std::string& url, const std::string& flag) {
  auto parsed = iot::common::ParseUrl(url, 1883);
  if (!parsed.ok() || parsed->scheme != "mqtt") {
    std::cerr << fmt::format("error: {} {}: expected mqtt://host[:port]\n", flag, url);
    return std::nullopt;
  }
  if (!IsLoopback(parsed->host)) {
    std::cerr << fmt::format("error: {} {}: the bench runs against loopback addresses only\n", flag,
                             url);
    return std::nullopt;
  }
  return iotbench::Endpoint{.host = parsed->host, .port = parsed->port};
}

using ScenarioFn = Json (*)(iotbench::BenchContext&);

/// Runs scenario `name` of `context` into `scenarios`: under `name` for IoTDA devices (as
/// always), under `{name}_alink` for Alink devices.
void RunOne(Json& scenarios, const std::string& name, ScenarioFn scenario_fn,
            iotbench::BenchContext& context) {
  const bool alink = context.dialect == iotbench::Dialect::kAlink;
  const std::string key = alink ? name + "_alink" : name;
  std::cerr << fmt::format("iot-bench: {} ...\n", key);
  const auto started = iotbench::Clock::now();
  scenarios[key] = scenario_fn(context);
  scenarios[key]["dialect"] = iotbench::DialectName(context.dialect);
  scenarios[key]["elapsed_s"] =
      iotbench::Round(iotbench::SecondsBetween(started, iotbench::Clock::now()), 1);
}

/// The figure at `pointer` of `json`, or a NotAvailable.
Json FigureAt(const Json& json, const std::string& pointer) {
  const Json::json_pointer at(pointer);
  return json.contains(at) ? json.at(at) : iotbench::NotAvailable("no figure " + pointer);
}

/// For each (name, JSON pointer) figure of scenario `name`: the IoTDA and the Alink value and
/// their ratio alink / iotda (the same devices, rate and report content in one run).
Json AlinkVsIotda(const Json& scenarios, const std::string& name,
                  const std::vector<std::pair<std::string, std::string>>& figures) {
  const Json iotda = scenarios.value(name, Json::object());
  const Json alink = scenarios.value(name + "_alink", Json::object());
  Json out = Json::object();
  for (const auto& [figure, pointer] : figures) {
    const Json a = FigureAt(alink, pointer);
    const Json b = FigureAt(iotda, pointer);
    out[figure] = {{"iotda", b},
                   {"alink", a},
                   {"ratio_alink_to_iotda",
                    a.is_number() && b.is_number()
                        ? iotbench::Ratio(a, b)
                        : iotbench::NotAvailable("a figure of one dialect is not available")}};
  }
  return out;
}

/// The ratios of a `--dialect both` run, for the scenarios that ran for both.
Json DialectRatios(const Json& scenarios) {
  Json out = Json::object();
  if (scenarios.contains("connections") && scenarios.contains("connections_alink")) {
    out["connections"] =
        AlinkVsIotda(scenarios, "connections",
                     {{"connects_per_s", "/platform/connects_per_s"},
                      {"connect_latency_p50_ms", "/platform/connect_latency/p50_ms"},
                      {"raw_connects_per_s", "/raw/connects_per_s"}});
  }
  if (scenarios.contains("ingest") && scenarios.contains("ingest_alink")) {
    out["ingest"] = AlinkVsIotda(
        scenarios, "ingest",
        {{"raw_msgs_per_s", "/raw/msgs_per_s"},
         {"publish_acked_per_s", "/platform/publish/acked_per_s"},
         {"subscription_msgs_per_s", "/platform/subscription/msgs_per_s"},
         {"subscription_latency_p50_ms", "/platform/subscription/latency/p50_ms"},
         {"history_rows_per_s", "/platform/history/rows_per_s"},
         {"shadow_reports_per_s", "/platform/shadow/reports_per_s"},
         {"gateway_cpu_percent", "/platform/cpu/processes/device-gateway/avg_cpu_percent"},
         {"other_processes_cpu_percent", "/platform/cpu/other_processes_cpu_percent"}});
  }
  return out;
}

/// Creates the run's alink product (a TSL of the bench's properties) and returns its context,
/// or nullopt after printing why not.
std::optional<iotbench::BenchContext> AlinkContext(const iotbench::BenchContext& iotda,
                                                   const std::string& product_key) {
  if (auto status = iotda.thing_model.CreateTslProduct(iotbench::BenchTsl(product_key));
      !status.ok()) {
    std::cerr << fmt::format("error: creating the bench's alink product at thing-model {}: {}\n",
                             iotda.config.thing_model_addr, iotbench::Describe(status));
    return std::nullopt;
  }
  iotbench::BenchContext alink = iotda;
  alink.product_id = product_key;
  alink.dialect = iotbench::Dialect::kAlink;
  alink.service_id = "default";  // a TSL's default function block
  return alink;
}

int Run(BenchConfig& config, const std::string& scenario, const std::string& json_path,
        const std::map<std::string, int>& pid_overrides, bool keep, std::size_t max_devices) {
  // Ingest and commands hold libmosquitto clients (kFilesPerDevice descriptors each); the
  // connect storm holds one socket per device.
  const int most = std::max(
      {scenario == "connections" || scenario == "all"
           ? (config.connections + static_cast<int>(kFilesPerDevice) - 1) /
                 static_cast<int>(kFilesPerDevice)
           : 0,
       scenario == "ingest" || scenario == "all" || scenario == "faults" ? config.ingest_devices
                                                                         : 0,
       scenario == "commands" || scenario == "all" ? config.command_devices : 0});
  if (static_cast<std::size_t>(most) > max_devices) {
    std::cerr << fmt::format(
        "error: {} devices need about {} open files, and this process may open {} (ulimit -n); "
        "raise the limit or run fewer devices\n",
        most, static_cast<std::size_t>(most) * kFilesPerDevice + kReservedFiles,
        max_devices * kFilesPerDevice + kReservedFiles);
    return kUsage;
  }
  const auto broker = ParseBroker(config.mqtt_url, "--mqtt-url");
  std::optional<iotbench::Endpoint> raw_broker = iotbench::Endpoint{};
  if (!config.raw_mqtt_url.empty()) {
    raw_broker = ParseBroker(config.raw_mqtt_url, "--raw-mqtt-url");
  }
  if (!broker || !raw_broker) {
    return kUsage;
  }
  const std::vector<std::pair<std::string, std::string>> services = {
      {"thing-model", config.thing_model_addr},
      {"device-gateway", config.gateway_addr},
      {"shadow", config.shadow_addr},
      {"command-dispatch", config.command_dispatch_addr},
      {"rule-forwarding", config.rule_forwarding_addr}};
  for (const auto& [name, address] : services) {
    if (!IsLoopback(SplitAddress(address).first)) {
      std::cerr << fmt::format("error: {} address {}: loopback addresses only\n", name, address);
      return kUsage;
    }
  }
  if (config.api_key.empty()) {
    std::cerr << "error: no API key: set IOTCTL_API_KEY or pass --api-key\n";
    return kUsage;
  }

  // The processes to watch: whoever listens on the given ports, unless --pid names them.
  std::vector<iotbench::WatchedProcess> watched;
  std::map<std::string, pid_t> pids;
  Json not_found = Json::array();
  const auto watch = [&](const std::string& name, int port) {
    std::optional<pid_t> pid;
    if (auto it = pid_overrides.find(name); it != pid_overrides.end()) {
      pid = it->second;
    } else if (port > 0) {
      pid = iotbench::PidListeningOn(static_cast<std::uint16_t>(port));
    }
    if (pid) {
      watched.push_back({name, *pid});
      pids[name] = *pid;
    } else {
      not_found.push_back(name);
    }
  };
  watch("mosquitto", broker->port);
  if (raw_broker->port > 0) {
    watch("mosquitto-raw", raw_broker->port);
  }
  for (const auto& [name, address] : services) {
    watch(name, SplitAddress(address).second);
  }
  for (const auto& [name, pid] : pid_overrides) {  // other processes named with --pid
    if (pids.count(name) == 0) {
      watch(name, 0);
    }
  }
  watched.push_back({"iot-bench", ::getpid()});
  iotbench::CpuSampler sampler(watched, std::chrono::milliseconds(500));

  iotbench::ThingModelClient thing_model(config.thing_model_addr, config.api_key);
  const std::string product_id = "bench" + RandomSuffix();
  if (auto status = thing_model.CreateProduct(iotbench::BenchProductModel(product_id));
      !status.ok()) {
    std::cerr << fmt::format("error: creating the bench product at thing-model {}: {}\n",
                             config.thing_model_addr, iotbench::Describe(status));
    return status.code() == absl::StatusCode::kUnavailable ? kUnreachable : kFailed;
  }
  iotbench::BenchContext context{.config = config,
                                 .thing_model = thing_model,
                                 .product_id = product_id,
                                 .sampler = sampler,
                                 .pids = pids,
                                 .broker = *broker,
                                 .raw_broker = *raw_broker};
  const bool with_iotda = config.dialect != "alink";
  std::optional<iotbench::BenchContext> alink =
      config.dialect == "iotda" ? std::nullopt : AlinkContext(context, "a1bench" + RandomSuffix());
  if (config.dialect != "iotda" && !alink) {
    (void)thing_model.DeleteProduct(product_id);
    return kFailed;
  }

  Json report = {{"tool", "iot-bench"},
                 {"started_at", iotbench::Rfc3339(std::chrono::system_clock::now())},
                 {"machine", iotbench::MachineInfo()},
                 {"product_id", product_id},
                 {"alink_product_key", alink ? Json(alink->product_id) : Json(nullptr)},
                 {"config",
                  {{"mqtt_url", config.mqtt_url},
                   {"raw_mqtt_url", config.raw_mqtt_url},
                   {"dialect", config.dialect},
                   {"threads", config.threads},
                   {"connections", config.connections},
                   {"ingest_devices", config.ingest_devices},
                   {"ingest_messages", config.ingest_messages},
                   {"publish_window", config.publish_window},
                   {"publish_rate_per_device", config.publish_rate},
                   {"commands", config.commands},
                   {"callers", config.callers},
                   {"command_devices", config.command_devices},
                   {"faults", config.faults},
                   {"fault_period_s", config.fault_period},
                   {"scenario_timeout_s", config.scenario_timeout_seconds}}},
                 {"processes", pids},
                 {"processes_not_found", not_found},
                 {"scenarios", Json::object()}};
  const auto run = [&](const std::string& name, ScenarioFn scenario_fn) {
    // The faults scenario kills parts of the stack: only when asked for by name.
    if (scenario != name && (scenario != "all" || name == "faults")) {
      return;
    }
    // Commands and faults measure IoTDA devices; connections and ingest the dialects asked for,
    // IoTDA first.
    const bool per_dialect = name == "connections" || name == "ingest";
    if (with_iotda || !per_dialect) {
      RunOne(report["scenarios"], name, scenario_fn, context);
    }
    if (alink && per_dialect) {
      RunOne(report["scenarios"], name, scenario_fn, *alink);
    }
  };
  run("connections", iotbench::RunConnections);
  run("ingest", iotbench::RunIngest);
  run("commands", iotbench::RunCommands);
  run("faults", iotbench::RunFaults);
  if (alink && with_iotda) {
    report["scenarios"]["alink_vs_iotda"] = DialectRatios(report["scenarios"]);
  }

  if (!keep) {
    if (auto status = thing_model.DeleteProduct(product_id); !status.ok()) {
      report["cleanup_error"] = iotbench::Describe(status);
    }
    if (auto status = alink ? thing_model.DeleteProduct(alink->product_id) : absl::OkStatus();
        !status.ok()) {
      report["cleanup_error"] = iotbench::Describe(status);
    }
  }
  // The faults' phases went out as JSON lines while they ran: the outline leaves them out and
  // ends with their table.
  Json outline = report;
  std::string table;
  if (outline["scenarios"].contains("faults")) {
    Json& faults = outline["scenarios"]["faults"];
    table = faults.value("table", "");
    faults.erase("phases");
    faults.erase("table");
  }
  PrintText(outline, std::cout);
  std::cout << table;
  if (!json_path.empty()) {
    std::ofstream out(json_path, std::ios::trunc);
    out << report.dump(2) << "\n";
    if (!out) {
      std::cerr << "error: cannot write " << json_path << "\n";
      return kFailed;
    }
  }
  return HasLoss(report["scenarios"]) ? kFailed : kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"iot-bench: load and latency benchmark of a running IoT platform stack"};
  app.footer(
      "Starts nothing: point it at a running stack (scripts/bench.sh does it for the local one).\n"
      "Exit codes: 0 done without loss, 1 loss or a failed scenario, 2 usage, 3 thing-model\n"
      "unreachable. See docs/benchmarks.md.");
  BenchConfig config;
  config.mqtt_url = Env("IOT_BENCH_MQTT_URL", Env("IOT_MQTT_URL", config.mqtt_url));
  config.mqtt_username = Env("IOT_BENCH_MQTT_USERNAME");
  config.mqtt_password = Env("IOT_BENCH_MQTT_PASSWORD");
  config.api_key = Env("IOTCTL_API_KEY");
  config.thing_model_addr = Env("IOT_THING_MODEL_ADDR", config.thing_model_addr);
  config.gateway_addr = Env("IOT_DEVICE_GATEWAY_ADDR", config.gateway_addr);
  config.command_dispatch_addr = Env("IOT_COMMAND_DISPATCH_ADDR", config.command_dispatch_addr);
  config.shadow_addr = Env("IOT_SHADOW_ADDR", config.shadow_addr);
  config.rule_forwarding_addr = Env("IOT_RULE_FORWARDING_ADDR", config.rule_forwarding_addr);
  std::string scenario = "all";
  std::string json_path;
  std::vector<std::string> pid_flags;
  bool keep = false;

  app.add_option("--scenario", scenario,
                 "connections, ingest, commands, all (the three) or faults (kills and restarts "
                 "parts of the stack: only by name)")
      ->check(CLI::IsMember({"connections", "ingest", "commands", "all", "faults"}))
      ->capture_default_str();
  app.add_option("--json", json_path, "Write the JSON report to this file");
  app.add_option("--mqtt-url", config.mqtt_url,
                 "Broker with the iot_auth plugin [IOT_BENCH_MQTT_URL, IOT_MQTT_URL]")
      ->capture_default_str();
  app.add_option("--raw-mqtt-url", config.raw_mqtt_url,
                 "A broker without the plugin (allow_anonymous) for the raw connect figure");
  app.add_option("--mqtt-username", config.mqtt_username,
                 "Broker service account of the raw subscriber/requester "
                 "[IOT_BENCH_MQTT_USERNAME]");
  app.add_option("--mqtt-password", config.mqtt_password,
                 "Its password (prefer IOT_BENCH_MQTT_PASSWORD)");
  app.add_option("--api-key", config.api_key, "Tenant API key (prefer IOTCTL_API_KEY)");
  app.add_option("--thing-model-addr", config.thing_model_addr, "[IOT_THING_MODEL_ADDR]")
      ->capture_default_str();
  app.add_option("--gateway-addr", config.gateway_addr, "[IOT_DEVICE_GATEWAY_ADDR]")
      ->capture_default_str();
  app.add_option("--command-dispatch-addr", config.command_dispatch_addr,
                 "[IOT_COMMAND_DISPATCH_ADDR]")
      ->capture_default_str();
  app.add_option("--shadow-addr", config.shadow_addr, "[IOT_SHADOW_ADDR]")->capture_default_str();
  app.add_option("--rule-forwarding-addr", config.rule_forwarding_addr,
                 "[IOT_RULE_FORWARDING_ADDR]")
      ->capture_default_str();
  app.add_option("--pid", pid_flags,
                 "NAME=PID of a process to watch: one of mosquitto, mosquitto-raw, thing-model, "
                 "device-gateway, shadow, command-dispatch, rule-forwarding when it is not found "
                 "by its listening port, or any other (redis, postgres, ...)");
  app.add_option("--dialect", config.dialect,
                 "connections, ingest: the devices' protocol: iotda (Huawei), alink (Alibaba) or "
                 "both (each scenario for IoTDA, then for Alink devices, and their ratios under "
                 "alink_vs_iotda); commands and faults run IoTDA devices")
      ->check(CLI::IsMember({"iotda", "alink", "both"}))
      ->capture_default_str();
  app.add_option("--threads", config.threads, "Device worker threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--connections", config.connections, "connections: devices in the storm (K)")
      ->check(CLI::Range(1, 20000))
      ->capture_default_str();
  auto* devices_option =
      app.add_option("--devices", config.ingest_devices, "ingest, faults: devices (N; faults: 300)")
          ->check(CLI::Range(1, 10000))
          ->capture_default_str();
  app.add_option("--messages", config.ingest_messages, "ingest: reports per device")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--publish-window", config.publish_window,
                 "ingest: QoS 1 reports in flight per device")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  auto* rate_option =
      app.add_option("--rate", config.publish_rate,
                     "ingest, faults: reports per second per device (0: unpaced; faults: 5); "
                     "keep it below the gateway's per-device limit "
                     "(IOT_DEVICE_GATEWAY_RATE_LIMIT, 50)")
          ->check(CLI::Range(0.0, 100000.0))
          ->capture_default_str();
  app.add_option("--commands", config.commands, "commands: calls in total")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--callers", config.callers, "commands: concurrent callers (C)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--command-devices", config.command_devices, "commands: answering devices")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--timeout", config.scenario_timeout_seconds,
                 "Bound of each phase of a scenario, seconds")
      ->check(CLI::Range(1.0, 3600.0))
      ->capture_default_str();
  app.add_option("--stall", config.stall_seconds,
                 "Stop waiting for arrivals after this many seconds without progress")
      ->check(CLI::Range(1.0, 600.0))
      ->capture_default_str();
  std::string faults = "default";
  app.add_option("--faults", faults,
                 "faults: comma-separated TARGET:kill|term, TARGET one of thing-model, "
                 "device-gateway, shadow, command-dispatch, rule-forwarding, mosquitto, redis, "
                 "postgres; 'default': every service, postgres killed, redis and mosquitto "
                 "terminated, then killed")
      ->capture_default_str();
  app.add_option("--fault-period", config.fault_period,
                 "faults: seconds of reporting per phase (the fault comes after a third)")
      ->check(CLI::Range(3.0, 3600.0))
      ->capture_default_str();
  config.restart_command = Env("IOT_BENCH_RESTART_COMMAND");
  app.add_option("--restart-command", config.restart_command,
                 "faults: shell command that starts what is not running and waits until it is "
                 "ready, e.g. 'scripts/stack.sh start' [IOT_BENCH_RESTART_COMMAND]");
  config.redis_url = Env("IOT_REDIS_URL");
  app.add_option("--redis-url", config.redis_url,
                 "faults: the stack's Redis (its process, its AOF settings) [IOT_REDIS_URL]");
  config.pg_url = Env("IOT_PG_URL");
  app.add_option("--pg-url", config.pg_url,
                 "faults: the stack's PostgreSQL (its processes, settings, the recorded status "
                 "of the bench's commands) [IOT_PG_URL]");
  config.mosquitto_conf = Env("IOT_BENCH_MOSQUITTO_CONF");
  app.add_option("--mosquitto-conf", config.mosquitto_conf,
                 "faults: the broker's configuration file (its autosave: the loss bound of a "
                 "SIGKILL) [IOT_BENCH_MOSQUITTO_CONF]");
  config.gateway_metrics = Env("IOT_BENCH_GATEWAY_METRICS");
  app.add_option("--gateway-metrics", config.gateway_metrics,
                 "faults: host:port of the gateway's Prometheus page (its rejections of device "
                 "uplink per phase) [IOT_BENCH_GATEWAY_METRICS]");
  app.add_flag("--keep", keep, "Keep the bench product and its devices");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUsage;
  }
  if (scenario == "faults") {
    // A few hundred devices at a steady rate the platform keeps up with, so that each fault's
    // backlog drains before the next.
    if (devices_option->count() == 0) {
      config.ingest_devices = 300;
    }
    if (rate_option->count() == 0) {
      config.publish_rate = 5;
    }
  }
  config.faults.clear();
  if (faults == "default") {
    config.faults = iotbench::DefaultFaults();
  } else {
    std::stringstream list(faults);
    for (std::string item; std::getline(list, item, ',');) {
      if (!item.empty()) {
        if (auto parsed = iotbench::ParseFault(item); !parsed.ok()) {
          std::cerr << "error: --faults: " << parsed.status().message() << "\n";
          return kUsage;
        }
        config.faults.push_back(item);
      }
    }
  }
  std::map<std::string, int> pid_overrides;
  for (const auto& flag : pid_flags) {
    const auto eq = flag.find('=');
    const int pid = eq == std::string::npos ? 0 : std::atoi(flag.c_str() + eq + 1);
    if (pid <= 0) {
      std::cerr << "error: --pid " << flag << ": expected NAME=PID\n";
      return kUsage;
    }
    pid_overrides[flag.substr(0, eq)] = pid;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const std::size_t max_devices = RaiseFileLimit();
  mosquitto_lib_init();
  const int code = Run(config, scenario, json_path, pid_overrides, keep, max_devices);
  mosquitto_lib_cleanup();
  return code;
}
