// Ingest: N devices publish M property reports each at QoS 1.
//   raw phase:      one plain subscriber (a broker service account) counts the reports it gets;
//   platform phase: the same publishing, counted where the platform delivers it — a
//                   subscription group (a rule with a consumer_group action), the history
//                   (ListPropertyHistory) and the shadow (ShowDeviceShadow reported).
// Report sequence numbers are phase * 1,000,000 + k, so the phases never count each other.
#include <fmt/format.h>

#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "iot/common/mqtt.h"
#include "polling.h"
#include "scenarios.h"
#include "subscription.h"

namespace iotbench {
namespace {

using Json = nlohmann::json;

constexpr std::int64_t kPhaseBase = 1'000'000;
constexpr int kRawPhase = 1;
constexpr int kPlatformPhase = 2;
constexpr int kProbePhase = 3;
constexpr auto kCallTimeout = std::chrono::seconds(30);
/// Longest wait for the probe report before the platform phase: the raw phase's backlog first.
constexpr auto kProbeWait = std::chrono::seconds(180);
/// Devices whose history and shadow are polled for per-message latency (LatencySampler).
constexpr std::size_t kLatencySamples = 5;
const std::string kRf = "iot.rule_forwarding.v1.";

/// Unique arrivals of one phase's reports, duplicates, latency and the last arrival.
class Arrivals {
 public:
  Arrivals(std::size_t devices, int per_device, int phase)
      : seen_(devices, std::vector<bool>(static_cast<std::size_t>(per_device))),
        per_device_(per_device),
        phase_(phase) {}

  void Add(long device, const Json* properties) {
    if (device < 0 || static_cast<std::size_t>(device) >= seen_.size() || properties == nullptr) {
      return;
    }
    const std::int64_t seq = properties->value("seq", std::int64_t{-1});
    const std::int64_t k = seq - phase_ * kPhaseBase;
    if (properties->value("phase", 0) != phase_ || k < 0 || k >= per_device_) {
      return;
    }
    const std::int64_t ts = properties->value("ts", std::int64_t{0});
    const std::lock_guard lock(mutex_);
    std::vector<bool>::reference seen =
        seen_[static_cast<std::size_t>(device)][static_cast<std::size_t>(k)];
    if (seen) {
      ++duplicates_;
      return;
    }
    seen = true;
    latency_.Add(static_cast<double>(UnixMillis() - ts));
    ++unique_;
    last_ = Clock::now();
  }

  [[nodiscard]] std::size_t unique() const {
    const std::lock_guard lock(mutex_);
    return unique_;
  }

  /// Waits until `expected` arrived, nothing new came for `stall`, or `deadline`.
  void Wait(std::size_t expected, Clock::duration stall, Clock::time_point deadline) const {
    std::size_t last_count = unique();
    auto last_progress = Clock::now();
    while (last_count < expected && Clock::now() < deadline &&
           Clock::now() - last_progress < stall) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (const std::size_t count = unique(); count != last_count) {
        last_count = count;
        last_progress = Clock::now();
      }
    }
  }

  /// received, duplicates, lost, seconds (from `started` to the last arrival), rate, latency.
  [[nodiscard]] Json Summary(std::size_t expected, Clock::time_point started) const {
    const std::lock_guard lock(mutex_);
    Json out = {{"received", unique_},
                {"duplicates", duplicates_},
                {"lost", expected - std::min(expected, unique_)}};
    const double seconds = unique_ > 0 ? SecondsBetween(started, last_) : 0;
    out["seconds"] = Round(seconds, 3);
    out["msgs_per_s"] = seconds > 0 ? Json(Round(static_cast<double>(unique_) / seconds))
                                    : NotAvailable("nothing arrived");
    out["latency"] = latency_.Summary();
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::vector<bool>> seen_;
  int per_device_;
  int phase_;
  std::size_t unique_ = 0;
  std::size_t duplicates_ = 0;
  Clock::time_point last_{};
  Latencies latency_;
};

PayloadFn Reports(const BenchContext& context, int phase) {
  return [&context, phase](std::size_t /*index*/, int k) {
    return context.Report(phase * kPhaseBase + k, phase, UnixMillis());
  };
}

Json PublishSummary(const PublishResult& result, std::size_t expected) {
  Json out = {{"expected", expected},
              {"sent", result.sent},
              {"acked", result.acked},
              {"seconds", Round(result.seconds, 3)}};
  out["acked_per_s"] = result.seconds > 0
                           ? Json(Round(static_cast<double>(result.acked) / result.seconds))
                           : NotAvailable("nothing acknowledged");
  if (result.timed_out) {
    out["timed_out"] = true;
  }
  return out;
}

Json CheckHistory(const BenchContext& context, const std::vector<DeviceCredentials>& devices,
                  int per_device, std::chrono::system_clock::time_point since,
                  Clock::time_point started) {
  const DeviceDataReader reader(context);
  if (auto status = reader.CheckHistory(); !status.ok()) {
    return NotAvailable(Describe(status));
  }
  const std::int64_t first = kPlatformPhase * kPhaseBase;
  // Distinct reports with a row: a duplicate row does not make up for a missing one.
  std::vector<std::size_t> rows(devices.size());
  std::vector<std::size_t> duplicates(devices.size());
  const auto result = PollDevices(
      context, devices.size(),
      [&](std::size_t i) -> absl::StatusOr<bool> {
        auto seqs =
            reader.HistorySeqs(devices[i].device_id, Rfc3339(since), first, first + per_device);
        if (!seqs.ok()) {
          return seqs.status();
        }
        rows[i] = seqs->size();
        duplicates[i] = 0;
        for (const auto& [seq, count] : *seqs) {
          duplicates[i] += static_cast<std::size_t>(count - 1);
        }
        return rows[i] >= static_cast<std::size_t>(per_device);
      },
      started);
  Json out = PollSummary(result, "ListPropertyHistory", devices.size(),
                         static_cast<std::size_t>(per_device), "rows");
  if (out.contains("not_available")) {
    return out;
  }
  std::size_t found = 0;
  std::size_t duplicate_rows = 0;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    found += rows[i];
    duplicate_rows += duplicates[i];
  }
  out["rows_expected"] = devices.size() * static_cast<std::size_t>(per_device);
  out["rows_found"] = found;
  out["duplicates"] = duplicate_rows;
  out["lost"] = out["rows_expected"].get<std::size_t>() - found;
  return out;
}

Json CheckShadow(const BenchContext& context, const std::vector<DeviceCredentials>& devices,
                 int per_device, Clock::time_point started) {
  const DeviceDataReader reader(context);
  if (auto status = reader.CheckShadow(); !status.ok()) {
    return NotAvailable(Describe(status));
  }
  const std::int64_t last = kPlatformPhase * kPhaseBase + per_device - 1;
  const auto result = PollDevices(
      context, devices.size(),
      [&](std::size_t i) -> absl::StatusOr<bool> {
        auto seq = reader.ShadowSeq(devices[i].device_id);
        if (!seq.ok()) {
          return seq.status();
        }
        return *seq == last;
      },
      started);
  Json out = PollSummary(result, "ShowDeviceShadow", devices.size(),
                         static_cast<std::size_t>(per_device), "reports");
  if (!out.contains("not_available")) {
    out["devices_stale"] = devices.size() - result.complete;
  }
  return out;
}

/// Per-message latency into history and into shadow, sampled: a few devices polled every
/// 50 ms while the platform phase runs. A history row of the report's `ts` property, or a new
/// `ts` in the shadow's reported properties, first seen at time t took t − ts (resolution: the
/// poll interval plus one call; shadow reports overwritten between two polls are not seen).
class LatencySampler {
 public:
  LatencySampler(const BenchContext& context, std::vector<std::string> device_ids,
                 std::chrono::system_clock::time_point since)
      : history_(context.config.rule_forwarding_addr, context.config.api_key),
        shadow_(context.config.shadow_addr, context.config.api_key),
        service_id_(context.service_id),
        device_ids_(std::move(device_ids)),
        since_(Rfc3339(since)),
        thread_([this] { Run(); }) {}
  ~LatencySampler() { Stop(); }
  LatencySampler(const LatencySampler&) = delete;
  LatencySampler& operator=(const LatencySampler&) = delete;

  void Stop() {
    stopping_.store(true);
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  /// {"history": latency summary, "shadow": ..., "sampled_devices", "poll_interval_ms"}.
  [[nodiscard]] Json Summary() const {
    return {{"history", history_latency_.Summary()},
            {"shadow", shadow_latency_.Summary()},
            {"sampled_devices", device_ids_.size()},
            {"poll_interval_ms", kPollInterval.count()}};
  }

 private:
  static constexpr std::chrono::milliseconds kPollInterval{50};

  void Run() {
    const std::string shadow_service = "iot.shadow.v1.Shadows";
    const bool with_history = history_.Check(kRf + "History", "ListPropertyHistory").ok();
    const bool with_shadow = shadow_.Check(shadow_service, "ShowDeviceShadow").ok();
    std::map<std::string, std::set<std::int64_t>> seen;
    std::map<std::string, std::int64_t> last_shadow;
    while (!stopping_.load()) {
      const auto round = Clock::now();
      for (const auto& id : device_ids_) {
        if (with_history) {
          auto page = history_.Call(kRf + "History", "ListPropertyHistory",
                                    {{"device_id", id},
                                     {"service_id", service_id_},
                                     {"property", "ts"},
                                     {"start_time", since_},
                                     {"limit", 1000}},
                                    kCallTimeout);
          const std::int64_t now = UnixMillis();
          if (page.ok()) {
            for (const auto& row : (*page)["values"]) {
              const Json value = Json::parse(row.value("value_json", ""), nullptr, false);
              if (value.is_number_integer() && seen[id].insert(value.get<std::int64_t>()).second) {
                history_latency_.Add(static_cast<double>(now - value.get<std::int64_t>()));
              }
            }
          }
        }
        if (with_shadow) {
          auto response =
              shadow_.Call(shadow_service, "ShowDeviceShadow",
                           {{"device_id", id}, {"service_id", service_id_}}, kCallTimeout);
          const std::int64_t now = UnixMillis();
          if (response.ok()) {
            for (const auto& data : (*response)["shadow"]) {
              const Json reported =
                  Json::parse(data.value("reported", Json::object()).value("properties_json", ""),
                              nullptr, false);
              const std::int64_t ts =
                  reported.is_object() ? reported.value("ts", std::int64_t{0}) : 0;
              auto& last = last_shadow[id];
              if (ts > 0 && ts != last) {
                // The first value seen is whatever the device reported before: not a sample.
                if (last != 0) {
                  shadow_latency_.Add(static_cast<double>(now - ts));
                }
                last = ts;
              }
            }
          }
        }
      }
      std::this_thread::sleep_until(round + kPollInterval);
    }
  }

  DynamicClient history_;
  DynamicClient shadow_;
  const std::string service_id_;
  const std::vector<std::string> device_ids_;
  const std::string since_;
  Latencies history_latency_;
  Latencies shadow_latency_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

/// Waits (at most 30 s) until the gateway is idle again, so that the platform phase does not
/// start while it still works through the raw phase's reports.
double WaitGatewayIdle(const BenchContext& context) {
  const auto started = Clock::now();
  int idle_samples = 0;
  while (Clock::now() - started < std::chrono::seconds(30)) {
    const auto percent = context.sampler.LatestPercent("device-gateway");
    if (!percent) {
      break;
    }
    idle_samples = *percent < 10 ? idle_samples + 1 : 0;
    if (idle_samples >= 2) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return Round(SecondsBetween(started, Clock::now()), 1);
}

/// The raw phase's plain subscriber, counting into `arrivals`.
absl::StatusOr<std::unique_ptr<iot::common::MqttClient>> ConnectRawSubscriber(
    const BenchContext& context, Arrivals& arrivals) {
  return context.SubscribedClient(
      "raw-subscriber", context.ReportSuffix(),
      [&context, &arrivals](const iot::common::MqttMessage& message) {
        const Json payload = Json::parse(message.payload, nullptr, false);
        arrivals.Add(DeviceIndex(UplinkDevice(message.topic), context.product_id, "i"),
                     FindBenchProperties(payload));
      });
}

Json RawPhase(BenchContext& context, Fleet& fleet, Arrivals& arrivals, std::size_t expected) {
  const auto started = Clock::now();
  const PublishResult published = fleet.Publish(context.config.ingest_messages,
                                                Reports(context, kRawPhase), context.Deadline());
  arrivals.Wait(expected, context.Stall(), context.Deadline());
  const auto finished = Clock::now();
  Json out = arrivals.Summary(expected, started);
  out["publish"] = PublishSummary(published, expected);
  out["cpu"] = context.sampler.Summary(started, finished);
  return out;
}

}  // namespace

nlohmann::json RunIngest(BenchContext& context) {
  const BenchConfig& config = context.config;
  const auto devices_count = static_cast<std::size_t>(config.ingest_devices);
  const std::size_t expected = devices_count * static_cast<std::size_t>(config.ingest_messages);
  Json out = {{"devices", devices_count},
              {"messages_per_device", config.ingest_messages},
              {"messages", expected},
              {"payload_bytes", context.Report(kPhaseBase, 1, UnixMillis()).size()},
              {"qos", 1}};
  const auto since = std::chrono::system_clock::now() - std::chrono::minutes(1);
  auto devices = context.thing_model.AddDevices(context.product_id, "i", config.ingest_devices, 8);
  auto probe = context.thing_model.AddDevices(context.product_id, "probe", 1, 1);
  if (!devices.ok() || !probe.ok()) {
    out["error"] =
        "creating devices: " + Describe(devices.ok() ? probe.status() : devices.status());
    return out;
  }
  Arrivals raw_arrivals(devices_count, config.ingest_messages, kRawPhase);
  auto raw_subscriber = ConnectRawSubscriber(context, raw_arrivals);
  Fleet fleet(context.FleetFor(context.broker), *devices);
  const ConnectResult connected = fleet.Connect(context.Deadline());
  if (connected.connected != devices_count) {
    out["error"] = fmt::format("only {} of {} devices connected: {}", connected.connected,
                               devices_count, connected.first_error);
    return out;
  }

  if (raw_subscriber.ok()) {
    out["raw"] = RawPhase(context, fleet, raw_arrivals, expected);
    (*raw_subscriber)->Stop();
  } else {
    out["raw"] = NotAvailable(std::string(raw_subscriber.status().message()));
  }
  out["gateway_idle_wait_s"] = WaitGatewayIdle(context);

  // Platform phase.
  Json platform;
  Arrivals arrivals(devices_count, config.ingest_messages, kPlatformPhase);
  std::atomic<bool> probe_seen{false};
  Subscription subscription(context, [&](const SubscriptionMessage& message) {
    if (message.device_id == (*probe)[0].device_id) {
      probe_seen.store(true);
    } else {
      arrivals.Add(DeviceIndex(message.device_id, context.product_id, "i"),
                   FindBenchProperties(message.payload));
    }
  });
  const absl::Status subscribed = subscription.Start();
  if (subscribed.ok()) {
    // The rule takes effect within about a second: a probe device reports until its report
    // comes out of the subscription, which also warms up the whole path. The gateway's broker
    // session hands it the probe after whatever of the raw phase it still holds (its CPU says
    // little: a latency-bound gateway is idle while it waits on its owners), so the wait is
    // as long as that backlog may take, not the rule's second.
    Fleet prober(context.FleetFor(context.broker), *probe);
    (void)prober.Connect(context.Deadline());
    const auto probe_deadline = std::min(Clock::now() + kProbeWait, context.Deadline());
    while (!probe_seen.load() && Clock::now() < probe_deadline && subscription.ended().ok()) {
      (void)prober.Publish(1, Reports(context, kProbePhase), probe_deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    platform["probe_seen"] = probe_seen.load();
  }
  std::vector<std::string> sampled;
  for (std::size_t i = 0; i < devices->size() && sampled.size() < kLatencySamples; ++i) {
    sampled.push_back((*devices)[i].device_id);
  }
  LatencySampler latency(context, sampled, std::chrono::system_clock::now());
  const auto started = Clock::now();
  const PublishResult published =
      fleet.Publish(config.ingest_messages, Reports(context, kPlatformPhase), context.Deadline());
  platform["publish"] = PublishSummary(published, expected);
  if (subscribed.ok()) {
    arrivals.Wait(expected, context.Stall(), context.Deadline());
    platform["subscription"] = arrivals.Summary(expected, started);
    // A broken stream is opened again (the consumer's unacked messages come back); only an
    // error a new stream cannot change ends the subscription.
    platform["subscription"]["resubscribed"] = subscription.resubscribed();
    if (!subscription.last_stream_error().ok()) {
      platform["subscription"]["last_stream_error"] = Describe(subscription.last_stream_error());
    }
    if (!subscription.ended().ok()) {
      platform["subscription"]["stream_error"] = Describe(subscription.ended());
    }
  } else {
    platform["subscription"] = NotAvailable(Describe(subscribed));
  }
  const auto delivered = Clock::now();
  platform["history"] = CheckHistory(context, *devices, config.ingest_messages, since, started);
  platform["shadow"] = CheckShadow(context, *devices, config.ingest_messages, started);
  latency.Stop();
  platform["sampled_latency"] = latency.Summary();
  platform["cpu"] = context.sampler.Summary(started, delivered);
  subscription.Stop();
  fleet.Disconnect();

  // Loss counts where the platform delivers: the subscription group and the history.
  Json lost = NotAvailable("neither the subscription nor the history figure is available");
  for (const char* part : {"subscription", "history"}) {
    if (platform[part].contains("lost")) {
      lost = (lost.is_number() ? lost.get<std::size_t>() : 0) +
             platform[part]["lost"].get<std::size_t>();
    }
  }
  platform["lost"] = lost;
  out["platform"] = platform;
  out["ratio_platform_to_raw"] =
      Ratio(platform["subscription"].value("msgs_per_s", NotAvailable("no subscription figure")),
            out["raw"].value("msgs_per_s", NotAvailable("no raw figure")));
  return out;
}

}  // namespace iotbench
