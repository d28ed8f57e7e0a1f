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
#include "scenarios.h"

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

PayloadFn Reports(int phase) {
  return [phase](std::size_t /*index*/, int k) {
    return ReportPayload(phase * kPhaseBase + k, phase, UnixMillis());
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

/// A consumer of the run's subscription group: a rule puts the product's property reports into
/// the group; a reader thread counts what Subscribe delivers and acks it.
class Subscription {
 public:
  Subscription(const BenchContext& context, Arrivals& arrivals, std::string probe_device)
      : context_(context),
        client_(context.config.rule_forwarding_addr, context.config.api_key),
        arrivals_(arrivals),
        probe_device_(std::move(probe_device)),
        group_("bench-" + context.product_id) {}

  ~Subscription() { Stop(); }

  absl::Status Start() {
    for (const auto& [service, method] :
         {std::pair{"Subscriptions", "CreateConsumerGroup"},
          std::pair{"Subscriptions", "Subscribe"}, std::pair{"Rules", "CreateRule"}}) {
      if (auto status = client_.Check(kRf + service, method); !status.ok()) {
        return status;
      }
    }
    auto group = client_.Call(kRf + "Subscriptions", "CreateConsumerGroup",
                              {{"group", {{"group_name", group_}}}}, kCallTimeout);
    if (!group.ok()) {
      return Annotate("CreateConsumerGroup", group.status());
    }
    group_created_ = true;
    const Json rule = {
        {"name", "iot-bench " + context_.product_id},
        {"description", "created and deleted by iot-bench"},
        {"resource", "device.property"},
        {"product_id", context_.product_id},
        {"sql", "SELECT *"},
        {"actions", Json::array({{{"type", "consumer_group"},
                                  {"config_json", Json{{"group", group_}}.dump()}}})}};
    auto created = client_.Call(kRf + "Rules", "CreateRule", rule, kCallTimeout);
    if (!created.ok()) {
      return Annotate("CreateRule", created.status());
    }
    rule_id_ = created->value("rule_id", "");
    auto stream = client_.OpenStream(kRf + "Subscriptions", "Subscribe");
    if (!stream.ok()) {
      return Annotate("Subscribe", stream.status());
    }
    stream_ = *std::move(stream);
    if (!stream_->Write({{"start",
                          {{"group_name", group_},
                           {"consumer_name", "iot-bench"},
                           {"max_in_flight", 1000}}}})) {
      return Annotate("Subscribe", stream_->Finish());
    }
    reader_ = std::thread([this] { Read(); });
    return absl::OkStatus();
  }

  [[nodiscard]] bool probe_seen() const { return probe_seen_.load(); }
  /// Why the stream ended early (OK while it runs).
  [[nodiscard]] absl::Status ended() const {
    const std::lock_guard lock(mutex_);
    return ended_;
  }

  void Stop() {
    if (stream_ && !stopping_.exchange(true)) {
      stream_->Cancel();
      reader_.join();
    }
    if (!rule_id_.empty()) {
      (void)client_.Call(kRf + "Rules", "DeleteRule", {{"rule_id", rule_id_}}, kCallTimeout);
      rule_id_.clear();
    }
    if (group_created_) {
      (void)client_.Call(kRf + "Subscriptions", "DeleteConsumerGroup", {{"group_name", group_}},
                         kCallTimeout);
      group_created_ = false;
    }
  }

 private:
  static absl::Status Annotate(const std::string& call, const absl::Status& status) {
    return {status.code(), call + ": " + std::string(status.message())};
  }

  void Read() {
    Json acks = Json::array();
    while (auto response = stream_->Read()) {
      const Json& message = (*response)["message"];
      acks.push_back(message.value("message_id", ""));
      const std::string device = message.value("device_id", "");
      const Json payload = Json::parse(message.value("payload_json", ""), nullptr, false);
      if (device == probe_device_) {
        probe_seen_.store(true);
      } else {
        arrivals_.Add(DeviceIndex(device, context_.product_id, "i"), FindBenchProperties(payload));
      }
      if (acks.size() >= 50) {
        stream_->Write({{"ack", {{"message_ids", acks}}}});
        acks = Json::array();
      }
    }
    const absl::Status status = stream_->Finish();
    if (!stopping_.load()) {
      const std::lock_guard lock(mutex_);
      ended_ = status.ok() ? absl::UnavailableError("the server ended the stream") : status;
    }
  }

  const BenchContext& context_;
  DynamicClient client_;
  Arrivals& arrivals_;
  std::string probe_device_;
  std::string group_;
  bool group_created_ = false;
  std::string rule_id_;
  std::unique_ptr<DynamicClient::Stream> stream_;
  std::thread reader_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> probe_seen_{false};
  mutable std::mutex mutex_;
  absl::Status ended_;
};

/// Polls `check(device index)` (true: the device's data is complete) over every device with a
/// few threads, pass after pass, until all are complete, a pass makes no progress for `stall`,
/// or `deadline`. Returns the devices complete and the seconds from `started` until then.
struct PollResult {
  std::size_t complete = 0;
  double seconds = 0;
  std::string first_error;
};

PollResult PollDevices(const BenchContext& context, std::size_t devices,
                       const std::function<absl::StatusOr<bool>(std::size_t)>& check,
                       Clock::time_point started) {
  const Clock::duration stall = context.Stall();
  const Clock::time_point deadline = context.Deadline();
  std::vector<bool> done(devices);
  PollResult result;
  auto last_progress = Clock::now();
  while (true) {
    std::mutex mutex;
    std::atomic<std::size_t> next{0};
    std::size_t progress = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (std::size_t i = next.fetch_add(1); i < devices; i = next.fetch_add(1)) {
          if (done[i]) {
            continue;
          }
          auto complete = check(i);
          const std::lock_guard lock(mutex);
          if (!complete.ok()) {
            if (result.first_error.empty()) {
              result.first_error = Describe(complete.status());
            }
          } else if (*complete) {
            done[i] = true;
            ++progress;
          }
        }
      });
    }
    for (auto& thread : threads) {
      thread.join();
    }
    result.complete += progress;
    if (progress > 0) {
      last_progress = Clock::now();
      result.seconds = SecondsBetween(started, last_progress);
    }
    if (result.complete == devices || Clock::now() >= deadline ||
        Clock::now() - last_progress >= stall || !result.first_error.empty()) {
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

/// The figure of a PollDevices() run; NotAvailable naming `call` when a call failed.
Json PollSummary(const PollResult& result, const std::string& call, std::size_t devices,
                 std::size_t per_device, const std::string& what) {
  if (!result.first_error.empty()) {
    return NotAvailable(call + " failed: " + result.first_error);
  }
  Json out = {{"devices_complete", result.complete}, {"devices", devices}};
  if (result.complete == devices) {
    out["complete_after_s"] = Round(result.seconds, 3);
    out[what + "_per_s"] =
        result.seconds > 0 ? Json(Round(static_cast<double>(devices * per_device) / result.seconds))
                           : NotAvailable("no time measured");
  }
  return out;
}

Json CheckHistory(const BenchContext& context, const std::vector<DeviceCredentials>& devices,
                  int per_device, std::chrono::system_clock::time_point since,
                  Clock::time_point started) {
  DynamicClient history(context.config.rule_forwarding_addr, context.config.api_key);
  if (auto status = history.Check(kRf + "History", "ListPropertyHistory"); !status.ok()) {
    return NotAvailable(Describe(status));
  }
  const std::int64_t first = kPlatformPhase * kPhaseBase;
  std::vector<std::size_t> rows(devices.size());
  const auto result = PollDevices(
      context, devices.size(),
      [&](std::size_t i) -> absl::StatusOr<bool> {
        std::size_t count = 0;
        std::string marker;
        do {
          auto page = history.Call(kRf + "History", "ListPropertyHistory",
                                   {{"device_id", devices[i].device_id},
                                    {"service_id", "bench"},
                                    {"property", "seq"},
                                    {"start_time", Rfc3339(since)},
                                    {"limit", 1000},
                                    {"marker", marker}},
                                   kCallTimeout);
          if (!page.ok()) {
            return page.status();
          }
          for (const auto& row : (*page)["values"]) {
            const Json value = Json::parse(row.value("value_json", ""), nullptr, false);
            if (value.is_number_integer() && value.get<std::int64_t>() >= first &&
                value.get<std::int64_t>() < first + per_device) {
              ++count;
            }
          }
          marker = page->value("next_marker", "");
        } while (!marker.empty());
        rows[i] = count;
        return count >= static_cast<std::size_t>(per_device);
      },
      started);
  Json out = PollSummary(result, "ListPropertyHistory", devices.size(),
                         static_cast<std::size_t>(per_device), "rows");
  if (out.contains("not_available")) {
    return out;
  }
  std::size_t found = 0;
  for (const auto count : rows) {
    found += std::min(count, static_cast<std::size_t>(per_device));
  }
  out["rows_expected"] = devices.size() * static_cast<std::size_t>(per_device);
  out["rows_found"] = found;
  out["lost"] = out["rows_expected"].get<std::size_t>() - found;
  return out;
}

Json CheckShadow(const BenchContext& context, const std::vector<DeviceCredentials>& devices,
                 int per_device, Clock::time_point started) {
  DynamicClient shadow(context.config.shadow_addr, context.config.api_key);
  const std::string service = "iot.shadow.v1.Shadows";
  if (auto status = shadow.Check(service, "ShowDeviceShadow"); !status.ok()) {
    return NotAvailable(Describe(status));
  }
  const std::int64_t last = kPlatformPhase * kPhaseBase + per_device - 1;
  const auto result = PollDevices(
      context, devices.size(),
      [&](std::size_t i) -> absl::StatusOr<bool> {
        auto response = shadow.Call(service, "ShowDeviceShadow",
                                    {{"device_id", devices[i].device_id}, {"service_id", "bench"}},
                                    kCallTimeout);
        if (!response.ok()) {
          return response.status();
        }
        for (const auto& data : (*response)["shadow"]) {
          const Json reported = Json::parse(
              data.value("reported", Json::object()).value("properties_json", ""), nullptr, false);
          if (reported.is_object() && reported.value("seq", std::int64_t{-1}) == last) {
            return true;
          }
        }
        return false;
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
                                     {"service_id", "bench"},
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
          auto response = shadow_.Call(shadow_service, "ShowDeviceShadow",
                                       {{"device_id", id}, {"service_id", "bench"}}, kCallTimeout);
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
      "raw-subscriber", "sys/properties/report",
      [&context, &arrivals](const iot::common::MqttMessage& message) {
        const Json payload = Json::parse(message.payload, nullptr, false);
        arrivals.Add(DeviceIndex(UplinkDevice(message.topic), context.product_id, "i"),
                     FindBenchProperties(payload));
      });
}

Json RawPhase(BenchContext& context, Fleet& fleet, Arrivals& arrivals, std::size_t expected) {
  const auto started = Clock::now();
  const PublishResult published =
      fleet.Publish(context.config.ingest_messages, Reports(kRawPhase), context.Deadline());
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
              {"payload_bytes", ReportPayload(kPhaseBase, 1, UnixMillis()).size()},
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
  Subscription subscription(context, arrivals, (*probe)[0].device_id);
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
    while (!subscription.probe_seen() && Clock::now() < probe_deadline &&
           subscription.ended().ok()) {
      (void)prober.Publish(1, Reports(kProbePhase), probe_deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    platform["probe_seen"] = subscription.probe_seen();
  }
  std::vector<std::string> sampled;
  for (std::size_t i = 0; i < devices->size() && sampled.size() < kLatencySamples; ++i) {
    sampled.push_back((*devices)[i].device_id);
  }
  LatencySampler latency(context, sampled, std::chrono::system_clock::now());
  const auto started = Clock::now();
  const PublishResult published =
      fleet.Publish(config.ingest_messages, Reports(kPlatformPhase), context.Deadline());
  platform["publish"] = PublishSummary(published, expected);
  if (subscribed.ok()) {
    arrivals.Wait(expected, context.Stall(), context.Deadline());
    platform["subscription"] = arrivals.Summary(expected, started);
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
