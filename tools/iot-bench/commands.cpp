// Commands: C concurrent callers of CreateCommand against devices that answer at once; p50/p99
// and throughput. In the same run, the raw MQTT request/response round trip through the same
// broker: a service account publishes the request on the internal downlink topic (the plugin
// relays it to the device, as for the platform) and waits for the device's response.
#include <fmt/format.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "iot/common/mqtt.h"
#include "scenarios.h"

namespace iotbench {
namespace {

using Json = nlohmann::json;

constexpr auto kResponseTimeout = std::chrono::seconds(10);
const std::string kCommands = "iot.command_dispatch.v1.Commands";

/// Runs `count` calls of `call(caller, n)` (true: success) on `callers` threads, closed loop.
Json ClosedLoop(int callers, int count, Clock::time_point deadline,
                const std::function<absl::Status(int caller, int n)>& call) {
  Latencies latencies;
  std::atomic<int> next{0};
  std::atomic<int> failures{0};
  std::mutex error_mutex;
  std::string first_error;
  const auto started = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      for (int n = next.fetch_add(1); n < count && Clock::now() < deadline; n = next.fetch_add(1)) {
        const auto begin = Clock::now();
        const absl::Status status = call(c, n);
        if (status.ok()) {
          latencies.Add(std::chrono::duration<double, std::milli>(Clock::now() - begin).count());
        } else {
          failures.fetch_add(1);
          const std::lock_guard lock(error_mutex);
          if (first_error.empty()) {
            first_error = Describe(status);
          }
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  const double seconds = SecondsBetween(started, Clock::now());
  Json out = {{"calls", count},
              {"ok", latencies.size()},
              {"failed", failures.load()},
              {"seconds", Round(seconds, 3)}};
  out["per_s"] = seconds > 0 && latencies.size() > 0
                     ? Json(Round(static_cast<double>(latencies.size()) / seconds))
                     : NotAvailable(first_error.empty() ? "no call succeeded" : first_error);
  out["latency"] = latencies.Summary();
  if (!first_error.empty()) {
    out["first_error"] = first_error;
  }
  return out;
}

/// Request ids awaiting their response, completed by the requester's message handler.
class Waiters {
 public:
  void Expect(const std::string& id) {
    const std::lock_guard lock(mutex_);
    done_[id] = false;
  }
  void Complete(const std::string& id) {
    const std::lock_guard lock(mutex_);
    if (auto it = done_.find(id); it != done_.end()) {
      it->second = true;
      changed_.notify_all();
    }
  }
  bool Wait(const std::string& id, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    const bool done = changed_.wait_for(lock, timeout, [&] { return done_[id]; });
    done_.erase(id);
    return done;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, bool> done_;
};

/// The raw round trips' requester, completing `waiters`.
absl::StatusOr<std::unique_ptr<iot::common::MqttClient>> ConnectRequester(
    const BenchContext& context, Waiters& waiters) {
  static const std::string kMarker = "/sys/commands/response/request_id=";
  return context.SubscribedClient(
      "requester", "sys/commands/response/#", [&waiters](const iot::common::MqttMessage& message) {
        if (const auto at = message.topic.find(kMarker); at != std::string::npos) {
          waiters.Complete(message.topic.substr(at + kMarker.size()));
        }
      });
}

Json RawRoundTrips(BenchContext& context, const std::vector<DeviceCredentials>& devices,
                   iot::common::MqttClient& requester, Waiters& waiters) {
  const auto call = [&](int /*caller*/, int n) -> absl::Status {
    const auto& device = devices[static_cast<std::size_t>(n) % devices.size()];
    const std::string id = fmt::format("bench-raw-{}", n);
    const Json body = {{"object_device_id", device.device_id},
                       {"service_id", "bench"},
                       {"command_name", "ping"},
                       {"paras", {{"value", n}}}};
    waiters.Expect(id);
    if (auto status = requester.Publish(
            fmt::format("$iot/down/{}/sys/commands/request_id={}", device.device_id, id),
            body.dump(), 1);
        !status.ok()) {
      (void)waiters.Wait(id, std::chrono::milliseconds(0));
      return status;
    }
    return waiters.Wait(id, kResponseTimeout)
               ? absl::OkStatus()
               : absl::DeadlineExceededError("no response within 10 s");
  };
  // Warm-up: one round trip per device (and the connections' first packets).
  const Json warmup = ClosedLoop(1, static_cast<int>(devices.size()), context.Deadline(), call);
  const auto started = Clock::now();
  Json out = ClosedLoop(context.config.callers, context.config.commands, context.Deadline(), call);
  out["cpu"] = context.sampler.Summary(started, Clock::now());
  out["warmup_failed"] = warmup["failed"];
  return out;
}

Json PlatformCommands(BenchContext& context, const std::vector<DeviceCredentials>& devices) {
  DynamicClient commands(context.config.command_dispatch_addr, context.config.api_key);
  if (auto status = commands.Check(kCommands, "CreateCommand"); !status.ok()) {
    return NotAvailable(Describe(status));
  }
  const auto call = [&](int /*caller*/, int n) -> absl::Status {
    const auto& device = devices[static_cast<std::size_t>(n) % devices.size()];
    return commands
        .Call(kCommands, "CreateCommand",
              {{"device_id", device.device_id},
               {"service_id", "bench"},
               {"command_name", "ping"},
               {"paras_json", Json{{"value", n}}.dump()},
               {"timeout", 10}},
              std::chrono::seconds(15))
        .status();
  };
  // Warm-up: command-dispatch learns that the devices are online through presence; retry each
  // device's first command for a while.
  const auto warmup_deadline = Clock::now() + std::chrono::seconds(30);
  for (std::size_t i = 0; i < devices.size(); ++i) {
    absl::Status status = call(0, static_cast<int>(i));
    // Offline (presence not seen yet) or a peer not up yet: worth waiting for; anything else
    // (UNIMPLEMENTED, INVALID_ARGUMENT, ...) will not change.
    while ((absl::IsFailedPrecondition(status) || absl::IsUnavailable(status) ||
            absl::IsDeadlineExceeded(status)) &&
           Clock::now() < warmup_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      status = call(0, static_cast<int>(i));
    }
    if (!status.ok()) {
      return NotAvailable("warm-up CreateCommand failed: " + Describe(status));
    }
  }
  const auto started = Clock::now();
  Json out = ClosedLoop(context.config.callers, context.config.commands, context.Deadline(), call);
  out["cpu"] = context.sampler.Summary(started, Clock::now());
  return out;
}

}  // namespace

nlohmann::json RunCommands(BenchContext& context) {
  const BenchConfig& config = context.config;
  Json out = {{"callers", config.callers},
              {"commands", config.commands},
              {"devices", config.command_devices}};
  auto devices = context.thing_model.AddDevices(context.product_id, "k", config.command_devices, 4);
  if (!devices.ok()) {
    out["error"] = "creating devices: " + Describe(devices.status());
    return out;
  }
  Waiters waiters;
  auto requester = ConnectRequester(context, waiters);
  FleetOptions options = context.FleetFor(context.broker);
  options.answer_commands = true;
  Fleet fleet(options, *devices);
  const ConnectResult connected = fleet.Connect(context.Deadline());
  if (connected.connected != devices->size()) {
    out["error"] = fmt::format("only {} of {} devices connected: {}", connected.connected,
                               devices->size(), connected.first_error);
    return out;
  }
  if (requester.ok()) {
    out["raw"] = RawRoundTrips(context, *devices, **requester, waiters);
    (*requester)->Stop();
  } else {
    out["raw"] = NotAvailable(std::string(requester.status().message()));
  }
  out["platform"] = PlatformCommands(context, *devices);
  out["answered_by_devices"] = fleet.commands_answered();
  fleet.Disconnect();
  const auto figure = [&](const char* part, const char* key) {
    const Json& section = out[part];
    if (section.contains("not_available")) {
      return section;
    }
    if (std::string(key) == "per_s") {
      return section.value("per_s", NotAvailable("no figure"));
    }
    return section["latency"].value(key, NotAvailable("no successful call"));
  };
  out["ratio_p50_platform_to_raw"] = Ratio(figure("platform", "p50_ms"), figure("raw", "p50_ms"));
  out["ratio_p99_platform_to_raw"] = Ratio(figure("platform", "p99_ms"), figure("raw", "p99_ms"));
  out["ratio_throughput_platform_to_raw"] =
      Ratio(figure("platform", "per_s"), figure("raw", "per_s"));
  return out;
}

}  // namespace iotbench
