// iot-device-sim: simulated devices speaking the platform's (Huawei IoTDA) MQTT protocol. They
// report properties generated from their product model, answer commands and property sets/gets,
// and optionally send a shadow get, a message and an event. See docs/device-sim.md.
//
//   export IOTCTL_API_KEY=...
//   iot-device-sim --create 100 --product smartmeter01 --report-interval 5 --duration 60
//   iot-device-sim --devices-file devices.json --product smartmeter01 --count 10 --json
//
// Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 thing-model or broker unreachable.
#include <fmt/format.h>
#include <mosquitto.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "errors.h"
#include "provision.h"
#include "simulator.h"

namespace {

using devsim::Failure;
using devsim::kExitUsage;

constexpr int kMaxDevices = 10000;

std::atomic<bool> g_stop{false};

extern "C" void OnSignal(int /*signal*/) { g_stop.store(true); }

struct Options {
  std::string devices_file;
  int create = 0;
  std::string product;
  std::string node_prefix = "sim-";
  std::string model_file;
  std::string thing_model_addr = "127.0.0.1:50052";
  std::string api_key;
  std::string api_key_file;
  double timeout_seconds = 10;
  std::string save_devices;
  double duration_seconds = 0;
  bool json = false;
  devsim::SimOptions sim;
};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

CLI::Validator Range(double min, double max, const std::string& what) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value) || value < min || value > max) {
          return fmt::format("must be {} between {} and {}", what, min, max);
        }
        return {};
      },
      fmt::format("{}..{}", min, max));
}

void PrintSummary(const devsim::SimStats& s, double elapsed, bool json) {
  if (json) {
    const nlohmann::json out = {{"devices", s.devices.load()},
                                {"connected", s.connected.load()},
                                {"connects", s.connects.load()},
                                {"connect_failures", s.connect_failures.load()},
                                {"connections_lost", s.disconnects.load()},
                                {"reports_sent", s.reports_sent.load()},
                                {"reports_acked", s.reports_acked.load()},
                                {"commands_answered", s.commands_answered.load()},
                                {"property_sets_answered", s.property_sets_answered.load()},
                                {"property_gets_answered", s.property_gets_answered.load()},
                                {"simulated_failures", s.simulated_failures.load()},
                                {"shadow_gets_sent", s.shadow_gets_sent.load()},
                                {"shadow_responses", s.shadow_responses.load()},
                                {"messages_sent", s.messages_sent.load()},
                                {"events_sent", s.events_sent.load()},
                                {"other_downlink", s.other_downlink.load()},
                                {"errors", s.errors.load()},
                                {"elapsed_seconds", elapsed}};
    std::cout << out.dump() << std::endl;
    return;
  }
  std::cout << fmt::format(
                   "devices:            {} ({} connected; {} connects, {} failed, {} lost)\n"
                   "reports:            {} sent, {} acknowledged\n"
                   "answered:           {} commands, {} property sets, {} property gets "
                   "({} simulated failures)\n"
                   "sent once:          {} shadow gets ({} responses), {} messages, {} events\n"
                   "other downlink:     {}\n"
                   "errors:             {}\n"
                   "elapsed:            {:.2f} s\n",
                   s.devices.load(), s.connected.load(), s.connects.load(),
                   s.connect_failures.load(), s.disconnects.load(), s.reports_sent.load(),
                   s.reports_acked.load(), s.commands_answered.load(),
                   s.property_sets_answered.load(), s.property_gets_answered.load(),
                   s.simulated_failures.load(), s.shadow_gets_sent.load(),
                   s.shadow_responses.load(), s.messages_sent.load(), s.events_sent.load(),
                   s.other_downlink.load(), s.errors.load(), elapsed)
            << std::flush;
}

/// Usage errors in the options themselves.
void CheckOptions(const Options& options) {
  if (options.devices_file.empty() == (options.create == 0)) {
    throw Failure(kExitUsage, "give either --devices-file or --create N (with --product)");
  }
  if (options.create > 0 && options.product.empty()) {
    throw Failure(kExitUsage, "--create needs --product");
  }
  if (options.product.empty() && options.model_file.empty()) {
    throw Failure(kExitUsage, "the product model is needed: pass --product or --model-file");
  }
  if (!IsLoopback(options.sim.host)) {
    throw Failure(kExitUsage,
                  "--mqtt-host must be a loopback address (127.x.x.x, ::1, "
                  "localhost): the simulator is for local testing");
  }
}

/// A usage error when --event names no event type of the model.
void CheckEventType(const iot::thing_model::ProductModel& model, const std::string& event_type) {
  if (event_type.empty()) {
    return;
  }
  bool found = false;
  for (const auto& service : model.services()) {
    found = found || service.FindEvent(event_type) != nullptr;
  }
  if (!found) {
    throw Failure(kExitUsage,
                  fmt::format("--event {}: no such event type in the model", event_type));
  }
}

/// Runs the devices until done, --duration, a signal or an unreachable broker; the exit code.
int Simulate(const Options& options, iot::thing_model::ProductModel model,
             const std::vector<devsim::DeviceCredentials>& devices) {
  std::cerr << fmt::format("iot-device-sim: {} devices, broker {}:{}, {} reports every {} s{}\n",
                           devices.size(), options.sim.host, options.sim.port,
                           options.sim.count > 0 ? std::to_string(options.sim.count) : "unlimited",
                           options.sim.report_interval_seconds,
                           options.duration_seconds > 0
                               ? fmt::format(", at most {} s", options.duration_seconds)
                               : std::string());

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);

  devsim::SimStats stats;
  const auto started = std::chrono::steady_clock::now();
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  auto shared_model = std::make_shared<const iot::thing_model::ProductModel>(std::move(model));
  std::thread simulation([&] {
    devsim::RunSimulation(options.sim, shared_model, devices, stop, stats);
    done.store(true);
  });
  const auto deadline =
      options.duration_seconds > 0
          ? started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                          std::chrono::duration<double>(options.duration_seconds))
          : std::chrono::steady_clock::time_point::max();
  while (!done.load()) {
    if (g_stop.load() || std::chrono::steady_clock::now() >= deadline ||
        (stats.broker_unreachable.load() && stats.connected.load() == 0)) {
      stop.store(true);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  simulation.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  PrintSummary(stats, elapsed, options.json);

  if (stats.broker_unreachable.load() && stats.connected.load() == 0) {
    std::cerr << fmt::format("error: the broker at {}:{} is unreachable\n", options.sim.host,
                             options.sim.port);
    return devsim::kExitUnreachable;
  }
  if (stats.connected.load() < stats.devices.load() || stats.errors.load() > 0) {
    std::cerr << fmt::format("error: {} of {} devices connected, {} errors\n",
                             stats.connected.load(), stats.devices.load(), stats.errors.load());
    return devsim::kExitRuntime;
  }
  return devsim::kExitOk;
}

int Run(const Options& options) {
  CheckOptions(options);
  // Devices from the file first: a bad file is a usage error before any server is called.
  std::vector<devsim::DeviceCredentials> devices;
  if (!options.devices_file.empty()) {
    devices = devsim::ReadDevicesFile(options.devices_file);
    if (devices.size() > static_cast<std::size_t>(kMaxDevices)) {
      throw Failure(kExitUsage,
                    fmt::format("{}: more than {} devices", options.devices_file, kMaxDevices));
    }
  }

  std::optional<iot::thing_model::ProductModel> model;
  if (!options.model_file.empty()) {
    model = devsim::ParseModel(devsim::ReadTextFile(options.model_file, "the model file"),
                               options.model_file);
  }
  std::optional<devsim::ThingModel> thing_model;
  if (!options.product.empty() && (!model || options.create > 0)) {
    thing_model.emplace(options.thing_model_addr,
                        devsim::ResolveApiKey(options.api_key, options.api_key_file),
                        options.timeout_seconds);
  }
  if (!model) {
    model = thing_model->ShowProduct(options.product);
  }
  CheckEventType(*model, options.sim.event_type);
  if (options.create > 0) {
    devices = thing_model->CreateDevices(options.product, options.node_prefix, options.create);
  }
  if (!options.save_devices.empty()) {
    devsim::WriteDevicesFile(options.save_devices, devices);
  }

  return Simulate(options, *std::move(model), devices);
}

void AddOptions(CLI::App& app, Options& o) {
  auto* file = app.add_option("--devices-file", o.devices_file,
                              "Devices to simulate: JSON lines or a JSON array of "
                              "{device_id, secret}");
  app.add_option("--create", o.create,
                 "Create N devices {product}_{node-prefix}{i} through thing-model (existing "
                 "ones get a new secret)")
      ->check(CLI::Range(1, kMaxDevices))
      ->excludes(file);
  app.add_option("--product", o.product, "Product id: its model (ShowProduct) and --create");
  app.add_option("--node-prefix", o.node_prefix, "Node id prefix of created devices")
      ->capture_default_str();
  app.add_option("--model-file", o.model_file,
                 "Product-model JSON to use instead of ShowProduct (no thing-model needed with "
                 "--devices-file)");
  app.add_option("--thing-model-addr", o.thing_model_addr, "thing-model gRPC address")
      ->capture_default_str();
  auto* key = app.add_option("--api-key", o.api_key, "API key (prefer IOTCTL_API_KEY)");
  app.add_option("--api-key-file", o.api_key_file, "File holding the API key")->excludes(key);
  app.add_option("--timeout", o.timeout_seconds, "Deadline of each thing-model call, seconds")
      ->check(Range(0.1, 600, "seconds"))
      ->capture_default_str();
  app.add_option("--save-devices", o.save_devices,
                 "Write the devices used (JSON array of {device_id, secret}, mode 0600)");
  app.add_option("--mqtt-host", o.sim.host, "Broker host (loopback only)")->capture_default_str();
  app.add_option("--mqtt-port", o.sim.port, "Broker port")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  app.add_option("--report-interval", o.sim.report_interval_seconds,
                 "Seconds between two property reports of a device")
      ->check(Range(0.01, 86400, "seconds"))
      ->capture_default_str();
  app.add_option("--interval-property", o.sim.interval_property,
                 "Writable number property that states the report interval: it starts out as "
                 "--report-interval (\"\" = none)")
      ->capture_default_str();
  app.add_option("--count", o.sim.count, "Reports per device, then exit (0: until stopped)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  app.add_option("--duration", o.duration_seconds, "Stop after this many seconds (0: no limit)")
      ->check(Range(0, 7 * 86400, "seconds"))
      ->capture_default_str();
  app.add_option("--response-delay-ms", o.sim.response_delay_ms,
                 "Delay before answering a command or property set/get")
      ->check(CLI::Range(0, 600000))
      ->capture_default_str();
  app.add_option("--failure-rate", o.sim.failure_rate,
                 "Share of commands and property sets/gets answered with result_code 1")
      ->check(Range(0, 1, "a fraction"))
      ->capture_default_str();
  app.add_flag("--shadow-get", o.sim.shadow_get, "Send a shadow get once at connect");
  app.add_option("--message-up", o.sim.message_up, "Send this message once per device");
  app.add_option("--event", o.sim.event_type,
                 "Send this event (paras generated from the model) once per device");
  app.add_option("--seed", o.sim.seed, "Random seed of the generated values (0: random)");
  app.add_flag("--json", o.json, "Print the summary as one JSON object");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"iot-device-sim: simulated devices speaking the platform's MQTT device protocol"};
  app.footer(
      "Devices come from --devices-file or are created with --create (thing-model API key from\n"
      "--api-key, --api-key-file, IOTCTL_API_KEY or IOTCTL_API_KEY_FILE).\n"
      "Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 thing-model or broker unreachable.");
  app.failure_message([](const CLI::App* /*app*/, const CLI::Error& e) {
    return "error: " + std::string(e.what()) + "\nRun with --help for the usage.\n";
  });

  Options o;
  AddOptions(app, o);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  mosquitto_lib_init();
  int code = 0;
  try {
    code = Run(o);
  } catch (const Failure& failure) {
    std::cerr << "error: " << failure.what() << "\n";
    code = failure.code();
  }
  mosquitto_lib_cleanup();
  return code;
}
