// Faults: the fault matrix of issue #14. N devices report at QoS 1 at a steady rate in phases of
// `--fault-period` seconds; the first phase has no fault (the baseline), each further phase one:
// a third into it the bench SIGKILLs (or SIGTERMs) one component of the stack, waits until it
// is gone and runs the restart command. Per phase it counts, against the reports acknowledged
// to the devices (PUBACK received; devices republish what was in flight when a connection
// broke): what is missing from the subscription, from the history, and devices whose shadow
// misses their last report; duplicates; how long until the first report sent after the fault
// came out of the subscription, and until everything sent before the restart completed did.
// Sync commands issued around each fault must end with a definite status.
// Report sequence numbers are phase * 1,000,000 + k: phases never count each other.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "iot/common/postgres.h"
#include "iot/common/redis.h"
#include "iot/common/url.h"
#include "polling.h"
#include "scenarios.h"
#include "stack_control.h"
#include "subscription.h"

namespace iotbench {
namespace {

using Json = nlohmann::json;

constexpr std::int64_t kPhaseBase = 1'000'000;
constexpr auto kProbeWait = std::chrono::seconds(120);
constexpr auto kTermGrace = std::chrono::seconds(120);
const std::string kCommands = "iot.command_dispatch.v1.Commands";

/// Sync commands around a fault: the device's answer window and how much longer the bench
/// waits for the platform to say anything before it calls a command stuck.
constexpr int kCommandTimeoutSeconds = 5;
constexpr auto kCommandGrace = std::chrono::seconds(25);
constexpr int kCommandCallers = 2;
constexpr std::size_t kCommandDevices = 10;
/// How long a command recorded SENT may stay so after its deadline (the sweeper runs every
/// second and times out what is 2 s past it) before the bench calls it stuck.
constexpr auto kRecordedGrace = std::chrono::seconds(30);

/// One phase's reports: which were acknowledged to their device, when each first came out of
/// the subscription (and when it was sent), distinct deliveries and duplicates.
class PhaseTracker {
 public:
  PhaseTracker(std::size_t devices, int per_device, int phase)
      : per_device_(per_device),
        phase_(phase),
        acked_(devices, std::vector<bool>(static_cast<std::size_t>(per_device))),
        arrived_ms_(devices, std::vector<std::int64_t>(static_cast<std::size_t>(per_device))),
        sent_ms_(devices, std::vector<std::int64_t>(static_cast<std::size_t>(per_device))) {}

  [[nodiscard]] int phase() const { return phase_; }
  [[nodiscard]] int per_device() const { return per_device_; }
  [[nodiscard]] std::size_t devices() const { return acked_.size(); }
  [[nodiscard]] std::int64_t first_seq() const { return phase_ * kPhaseBase; }

  void Acked(std::size_t device, int k) {
    const std::lock_guard lock(mutex_);
    if (device < acked_.size() && k >= 0 && k < per_device_) {
      acked_[device][static_cast<std::size_t>(k)] = true;
      ++acked_count_;
    }
  }

  /// A subscription message of this phase (`properties`: the report's).
  void Arrived(long device, const Json& properties, const std::string& delivery_id,
               std::int64_t now_ms) {
    const std::int64_t k = properties.value("seq", std::int64_t{-1}) - first_seq();
    if (device < 0 || static_cast<std::size_t>(device) >= acked_.size() || k < 0 ||
        k >= per_device_) {
      return;
    }
    const std::lock_guard lock(mutex_);
    // A message seen again under the same delivery id is a redelivery (at least once: an ack
    // lost with a broken stream); under another one, the platform delivered the report twice.
    if (!delivery_ids_.insert(delivery_id).second) {
      ++redelivered_;
      return;
    }
    std::int64_t& arrived =
        arrived_ms_[static_cast<std::size_t>(device)][static_cast<std::size_t>(k)];
    if (arrived != 0) {
      ++duplicates_;
      return;
    }
    arrived = now_ms;
    sent_ms_[static_cast<std::size_t>(device)][static_cast<std::size_t>(k)] =
        properties.value("ts", std::int64_t{0});
    ++unique_;
    latency_.Add(static_cast<double>(now_ms - properties.value("ts", now_ms)));
  }

  [[nodiscard]] std::size_t acked_count() const {
    const std::lock_guard lock(mutex_);
    return acked_count_;
  }
  [[nodiscard]] std::size_t unique() const {
    const std::lock_guard lock(mutex_);
    return unique_;
  }
  [[nodiscard]] bool IsAcked(std::size_t device, int k) const {
    const std::lock_guard lock(mutex_);
    return acked_[device][static_cast<std::size_t>(k)];
  }
  /// The last report of `device` acknowledged to it, -1 when none.
  [[nodiscard]] int LastAcked(std::size_t device) const {
    const std::lock_guard lock(mutex_);
    for (int k = per_device_ - 1; k >= 0; --k) {
      if (acked_[device][static_cast<std::size_t>(k)]) {
        return k;
      }
    }
    return -1;
  }

  /// Waits until every acknowledged report arrived, nothing new came for `stall`, or
  /// `deadline`.
  void WaitArrivals(Clock::duration stall, Clock::time_point deadline) const {
    std::size_t last_count = unique();
    auto last_progress = Clock::now();
    while (Clock::now() < deadline && Clock::now() - last_progress < stall) {
      if (MissingOnSubscription().empty()) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (const std::size_t count = unique(); count != last_count) {
        last_count = count;
        last_progress = Clock::now();
      }
    }
  }

  /// (device, k) of every acknowledged report that did not come out of the subscription.
  [[nodiscard]] std::vector<std::pair<std::size_t, int>> MissingOnSubscription() const {
    const std::lock_guard lock(mutex_);
    std::vector<std::pair<std::size_t, int>> missing;
    for (std::size_t d = 0; d < acked_.size(); ++d) {
      for (int k = 0; k < per_device_; ++k) {
        if (acked_[d][static_cast<std::size_t>(k)] &&
            arrived_ms_[d][static_cast<std::size_t>(k)] == 0) {
          missing.emplace_back(d, k);
        }
      }
    }
    return missing;
  }

  /// Seconds from `fault_ms` until the first report sent after it arrived (nullopt: none did).
  [[nodiscard]] std::optional<double> FlowBack(std::int64_t fault_ms) const {
    const std::lock_guard lock(mutex_);
    std::optional<std::int64_t> first;
    ForEachArrival([&](std::int64_t sent, std::int64_t arrived) {
      if (sent > fault_ms && (!first || arrived < *first)) {
        first = arrived;
      }
    });
    if (!first) {
      return std::nullopt;
    }
    return static_cast<double>(*first - fault_ms) / 1000.0;
  }

  /// Seconds from `fault_ms` until the last report sent before `until_ms` (the restart done)
  /// had arrived; reports that never arrived are the loss, not counted here.
  [[nodiscard]] std::optional<double> CaughtUp(std::int64_t fault_ms, std::int64_t until_ms) const {
    const std::lock_guard lock(mutex_);
    std::optional<std::int64_t> last;
    ForEachArrival([&](std::int64_t sent, std::int64_t arrived) {
      if (sent <= until_ms && (!last || arrived > *last)) {
        last = arrived;
      }
    });
    if (!last) {
      return std::nullopt;
    }
    return std::max(0.0, static_cast<double>(*last - fault_ms) / 1000.0);
  }

  [[nodiscard]] Json SubscriptionSummary() const {
    const std::lock_guard lock(mutex_);
    return {{"received", unique_},
            {"duplicates", duplicates_},
            {"redelivered", redelivered_},
            {"latency", latency_.Summary()}};
  }

 private:
  template <typename Fn>
  void ForEachArrival(Fn&& fn) const {
    for (std::size_t d = 0; d < arrived_ms_.size(); ++d) {
      for (std::size_t k = 0; k < arrived_ms_[d].size(); ++k) {
        if (arrived_ms_[d][k] != 0) {
          fn(sent_ms_[d][k], arrived_ms_[d][k]);
        }
      }
    }
  }

  const int per_device_;
  const int phase_;
  mutable std::mutex mutex_;
  std::vector<std::vector<bool>> acked_;
  std::vector<std::vector<std::int64_t>> arrived_ms_;  ///< first arrival, 0: none
  std::vector<std::vector<std::int64_t>> sent_ms_;     ///< the report's ts
  std::unordered_set<std::string> delivery_ids_;
  std::size_t acked_count_ = 0;
  std::size_t unique_ = 0;
  std::size_t duplicates_ = 0;
  std::size_t redelivered_ = 0;
  Latencies latency_;
};

PayloadFn Reports(int phase) {
  return [phase](std::size_t /*index*/, int k) {
    return ReportPayload(phase * kPhaseBase + k, phase, UnixMillis());
  };
}

/// Sync commands (CreateCommand, answered at once by the devices) issued by a few callers in a
/// closed loop from Start() until Stop(): each must end with a definite status.
class CommandProbe {
 public:
  CommandProbe(const BenchContext& context, std::vector<std::string> devices)
      : client_(context.config.command_dispatch_addr, context.config.api_key),
        devices_(std::move(devices)) {}
  ~CommandProbe() { Stop(); }
  CommandProbe(const CommandProbe&) = delete;
  CommandProbe& operator=(const CommandProbe&) = delete;

  [[nodiscard]] absl::Status Check() const { return client_.Check(kCommands, "CreateCommand"); }

  void Start() {
    for (int c = 0; c < kCommandCallers; ++c) {
      callers_.emplace_back([this, c] { Call(c); });
    }
  }

  /// Lets every caller finish its call in flight (each makes at least one) and joins them.
  Json Stop() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    stop_cv_.notify_all();
    for (auto& caller : callers_) {
      caller.join();
    }
    callers_.clear();
    const std::lock_guard lock(mutex_);
    Json out = {{"issued", issued_},
                {"succeeded", succeeded_},
                {"timed_out", timed_out_},
                {"failed", failed_},
                {"stuck", stuck_},
                {"failures", failures_},
                {"longest_s", Round(longest_s_, 2)}};
    return out;
  }

 private:
  void Call(int caller) {
    const auto client_deadline = std::chrono::seconds(kCommandTimeoutSeconds) + kCommandGrace;
    for (std::size_t n = static_cast<std::size_t>(caller);; n += kCommandCallers) {
      const auto begin = Clock::now();
      const auto status =
          client_
              .Call(kCommands, "CreateCommand",
                    {{"device_id", devices_[n % devices_.size()]},
                     {"service_id", "bench"},
                     {"command_name", "ping"},
                     {"paras_json", Json{{"value", static_cast<int>(n)}}.dump()},
                     {"timeout", kCommandTimeoutSeconds}},
                    std::chrono::duration_cast<std::chrono::milliseconds>(client_deadline))
              .status();
      const double seconds = SecondsBetween(begin, Clock::now());
      std::unique_lock lock(mutex_);
      ++issued_;
      longest_s_ = std::max(longest_s_, seconds);
      if (status.ok()) {
        ++succeeded_;
      } else if (absl::IsDeadlineExceeded(status) &&
                 seconds >= std::chrono::duration<double>(client_deadline).count() - 1) {
        ++stuck_;  // the platform said nothing long after the command's own timeout
      } else if (absl::IsDeadlineExceeded(status)) {
        ++timed_out_;
      } else {
        ++failed_;
        const std::string code = absl::StatusCodeToString(status.code());
        failures_[code] = failures_.value(code, 0) + 1;
      }
      if (stop_cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stopping_; })) {
        return;
      }
    }
  }

  DynamicClient client_;
  std::vector<std::string> devices_;
  std::vector<std::thread> callers_;
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::size_t issued_ = 0;
  std::size_t succeeded_ = 0;
  std::size_t timed_out_ = 0;
  std::size_t failed_ = 0;
  std::size_t stuck_ = 0;
  double longest_s_ = 0;
  Json failures_ = Json::object();
};

/// What PostgreSQL recorded for the sync commands of `device_prefix` created since
/// `since_unix_ms`: status -> count, once none is still open (SENT) past its deadline plus the
/// sweeper's margin, or `kRecordedGrace` after the deadline of the last one.
Json RecordedCommands(const std::string& pg_url, const std::string& device_prefix,
                      std::int64_t since_unix_ms) {
  iot::common::PgPool pool({.url = pg_url, .size = 1});
  const auto deadline = Clock::now() + kRecordedGrace;
  Json out;
  while (true) {
    auto statuses = pool.Call([&](pqxx::connection& connection) {
      pqxx::read_transaction tx(connection);
      Json counts = Json::object();
      const auto rows = tx.exec_params(
          "SELECT status, count(*), count(*) FILTER (WHERE deadline_at < now() - interval '3 "
          "seconds') FROM command_dispatch.requests WHERE kind = 'command' AND device_id LIKE "
          "$1 AND created_at >= to_timestamp($2::double precision / 1000) GROUP BY status",
          device_prefix + "%", since_unix_ms);
      std::int64_t overdue = 0;
      for (const auto& row : rows) {
        counts[row[0].as<std::string>()] = row[1].as<std::int64_t>();
        if (row[0].as<std::string>() == "SENT" || row[0].as<std::string>() == "DELIVERED") {
          overdue += row[2].as<std::int64_t>();
        }
      }
      return Json{{"statuses", counts}, {"open_past_deadline", overdue}};
    });
    if (!statuses.ok()) {
      if (Clock::now() >= deadline) {
        return NotAvailable("reading command_dispatch.requests: " + Describe(statuses.status()));
      }
    } else {
      out = *statuses;
      const Json& counts = out["statuses"];
      if (counts.value("SENT", 0) + counts.value("DELIVERED", 0) == 0 || Clock::now() >= deadline) {
        return out;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

/// The broker's persistence settings from its configuration file (persistence, autosave).
Json BrokerPersistence(const std::string& path) {
  if (path.empty()) {
    return NotAvailable("no broker configuration file given (--mosquitto-conf)");
  }
  std::ifstream in(path);
  if (!in) {
    return NotAvailable("cannot read " + path);
  }
  // mosquitto's defaults.
  Json out = {{"persistence", false},
              {"autosave_interval_s", 1800},
              {"autosave_on_changes", false},
              {"file", path}};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    std::string value;
    words >> key >> value;
    if (key == "persistence") {
      out["persistence"] = value == "true";
    } else if (key == "autosave_interval") {
      out["autosave_interval_s"] = std::atoi(value.c_str());
    } else if (key == "autosave_on_changes") {
      out["autosave_on_changes"] = value == "true";
    }
  }
  return out;
}

/// Redis's AOF settings (CONFIG GET), or why they are not known.
Json RedisDurability(const std::string& url) {
  if (url.empty()) {
    return NotAvailable("no Redis URL (--redis-url, IOT_REDIS_URL)");
  }
  auto client = iot::common::RedisClient::Create({.url = url, .pool_size = 1});
  if (!client.ok()) {
    return NotAvailable(Describe(client.status()));
  }
  Json out = Json::object();
  for (const char* name : {"appendonly", "appendfsync", "save"}) {
    auto reply = iot::common::CheckReply((*client)->Command({"CONFIG", "GET", name}));
    if (!reply.ok()) {
      return NotAvailable("CONFIG GET: " + Describe(reply.status()));
    }
    if (reply->elements.size() == 2) {
      out[name] = reply->elements[1].str;
    }
  }
  return out;
}

/// PostgreSQL's durability settings (SHOW), or why they are not known.
Json PostgresDurability(const std::string& url) {
  if (url.empty()) {
    return NotAvailable("no PostgreSQL URL (--pg-url, IOT_PG_URL)");
  }
  iot::common::PgPool pool({.url = url, .size = 1});
  auto settings = pool.Call([](pqxx::connection& connection) {
    pqxx::nontransaction tx(connection);
    Json out = Json::object();
    for (const char* name : {"fsync", "synchronous_commit", "full_page_writes"}) {
      out[name] = tx.exec1(std::string("SHOW ") + name)[0].as<std::string>();
    }
    return out;
  });
  return settings.ok() ? *settings : NotAvailable(Describe(settings.status()));
}

/// The bound of a fault's loss in reports for the shipped configuration (docs/deploy.md) at
/// `rate` reports/s, or why there is none.
Json LossBound(const FaultSpec& fault, const Json& configuration, double rate) {
  if (!fault.bounded) {
    return 0;
  }
  if (fault.target == "mosquitto") {
    const Json& broker = configuration["mosquitto"];
    if (broker.contains("not_available")) {
      return broker;
    }
    if (!broker["persistence"].get<bool>() || broker["autosave_on_changes"].get<bool>()) {
      return NotAvailable(
          "the broker does not save by time (persistence false or "
          "autosave_on_changes true): what it queued is not bounded");
    }
    // mosquitto saves when more than autosave_interval whole seconds have passed since the
    // last save: what it acknowledged in the last interval + 1 s may be only in memory.
    const double seconds = broker["autosave_interval_s"].get<double>() + 1;
    return {{"reports", static_cast<std::int64_t>(rate * seconds + 0.5)},
            {"rule", fmt::format("reports acknowledged in the last autosave_interval + 1 s "
                                 "({:g} s at {:g}/s)",
                                 seconds, rate)}};
  }
  const Json& redis = configuration["redis"];
  if (redis.contains("not_available")) {
    return redis;
  }
  if (redis.value("appendonly", "") != "yes") {
    return NotAvailable(
        "Redis runs without AOF: a SIGKILL loses everything since its last "
        "snapshot");
  }
  // everysec: Redis writes the AOF before it answers, but postpones that write for up to 2 s
  // while a background fsync is slow; always: fsynced before the answer.
  const double seconds = redis.value("appendfsync", "") == "always" ? 0 : 2;
  return {{"reports", static_cast<std::int64_t>(rate * seconds + 0.5)},
          {"rule", fmt::format("appendfsync {}: writes of the last {:g} s ({:g}/s)",
                               redis.value("appendfsync", ""), seconds, rate)}};
}

struct FaultsRun {
  const BenchContext& context;
  StackControl& control;
  Fleet& fleet;
  const std::vector<DeviceCredentials>& devices;
  std::vector<std::unique_ptr<PhaseTracker>>& trackers;
  const Json& configuration;
  double rate;  ///< reports/s offered by all devices
};

/// History: every device's rows of the phase, until each acknowledged report has one. Adds
/// (device, k) of every acknowledged report without a row to `lost`.
Json PhaseHistory(const FaultsRun& run, const PhaseTracker& tracker,
                  std::chrono::system_clock::time_point since, Clock::time_point started,
                  std::set<std::pair<std::size_t, int>>& lost) {
  const DeviceDataReader reader(run.context);
  if (auto status = reader.CheckHistory(); !status.ok()) {
    return NotAvailable(Describe(status));
  }
  const std::size_t n = run.devices.size();
  std::vector<std::vector<int>> missing(n);
  std::vector<std::size_t> duplicates(n);
  const auto result = PollDevices(
      run.context, n,
      [&](std::size_t i) -> absl::StatusOr<bool> {
        auto seqs =
            reader.HistorySeqs(run.devices[i].device_id, Rfc3339(since), tracker.first_seq(),
                               tracker.first_seq() + tracker.per_device());
        if (!seqs.ok()) {
          return seqs.status();
        }
        missing[i].clear();
        duplicates[i] = 0;
        for (int k = 0; k < tracker.per_device(); ++k) {
          const auto it = seqs->find(tracker.first_seq() + k);
          if (it == seqs->end()) {
            if (tracker.IsAcked(i, k)) {
              missing[i].push_back(k);
            }
          } else {
            duplicates[i] += static_cast<std::size_t>(it->second - 1);
          }
        }
        return missing[i].empty();
      },
      started);
  if (!result.first_error.empty()) {
    return NotAvailable("ListPropertyHistory failed: " + result.first_error);
  }
  std::size_t history_lost = 0;
  std::size_t duplicate_rows = 0;
  for (std::size_t i = 0; i < n; ++i) {
    history_lost += missing[i].size();
    duplicate_rows += duplicates[i];
    for (const int k : missing[i]) {
      lost.emplace(i, k);
    }
  }
  return {{"lost", history_lost},
          {"duplicates", duplicate_rows},
          {"complete_after_s", Round(result.seconds, 2)}};
}

/// Shadow: every device's reported seq is its last acknowledged report.
Json PhaseShadow(const FaultsRun& run, const PhaseTracker& tracker, Clock::time_point started) {
  const DeviceDataReader reader(run.context);
  if (auto status = reader.CheckShadow(); !status.ok()) {
    return NotAvailable(Describe(status));
  }
  const auto result = PollDevices(
      run.context, run.devices.size(),
      [&](std::size_t i) -> absl::StatusOr<bool> {
        auto seq = reader.ShadowSeq(run.devices[i].device_id);
        if (!seq.ok()) {
          return seq.status();
        }
        const int last = tracker.LastAcked(i);
        return last < 0 || *seq == tracker.first_seq() + last;
      },
      started);
  if (!result.first_error.empty()) {
    return NotAvailable("ShowDeviceShadow failed: " + result.first_error);
  }
  return {{"devices_stale", run.devices.size() - result.complete},
          {"complete_after_s", Round(result.seconds, 2)}};
}

/// The number in `figure`, or 0 when it is not available.
std::size_t CountOf(const Json& figure, const char* key) {
  return figure.is_object() && figure.contains(key) && figure[key].is_number()
             ? figure[key].get<std::size_t>()
             : 0;
}

/// The gateway's rejections of device uplink by reason (its Prometheus page), empty when the
/// bench was not told where it is.
std::map<std::string, double> GatewayRejections(const BenchConfig& config) {
  if (config.gateway_metrics.empty()) {
    return {};
  }
  auto values =
      ScrapeCounter(config.gateway_metrics, "iot_gateway_uplink_rejected_total", "reason");
  return values.ok() ? *values : std::map<std::string, double>{};
}

/// Rejections between two scrapes; a counter that went down restarted with its gateway (what
/// the killed one counted after the first scrape is not known).
Json RejectionsBetween(const std::map<std::string, double>& before,
                       const std::map<std::string, double>& after) {
  Json out = Json::object();
  for (const auto& [reason, value] : after) {
    const auto it = before.find(reason);
    const double base = it == before.end() || it->second > value ? 0 : it->second;
    if (value - base > 0) {
      out[reason] = static_cast<std::int64_t>(value - base);
    }
  }
  return out;
}

/// One phase: publish for the period; with a fault, inject it a third into the period with
/// sync commands in flight around it; then count what arrived where.
Json RunPhase(FaultsRun& run, PhaseTracker& tracker, const std::optional<FaultSpec>& fault) {
  const BenchConfig& config = run.context.config;
  Json out = {{"fault", fault ? fault->name : "none"}, {"phase", tracker.phase()}};
  const auto rejected_before = GatewayRejections(config);
  const auto since = std::chrono::system_clock::now() - std::chrono::minutes(1);
  const auto started = Clock::now();
  const auto deadline = run.context.Deadline();
  PublishResult published;
  std::thread publisher([&] {
    published =
        run.fleet.Publish(tracker.per_device(), Reports(tracker.phase()), deadline,
                          [&tracker](std::size_t device, int k) { tracker.Acked(device, k); });
  });

  std::optional<InjectResult> injected;
  Json commands;
  std::int64_t fault_ms = 0;
  std::int64_t restarted_ms = 0;
  if (fault) {
    const auto fault_at = started + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(config.fault_period / 3));
    std::vector<std::string> command_devices;
    for (std::size_t i = 0; i < std::min(kCommandDevices, run.devices.size()); ++i) {
      command_devices.push_back(run.devices[i].device_id);
    }
    CommandProbe probe(run.context, command_devices);
    const bool with_commands = probe.Check().ok();
    std::this_thread::sleep_until(fault_at - std::chrono::seconds(1));
    const std::int64_t commands_since = UnixMillis();
    if (with_commands) {
      probe.Start();
    }
    std::this_thread::sleep_until(fault_at);
    std::cerr << fmt::format("iot-bench: faults: {} ...\n", fault->name);
    auto result = run.control.Inject(*fault, kTermGrace);
    if (!result.ok()) {
      out["error"] = Describe(result.status());
    } else {
      injected = *std::move(result);
      fault_ms = injected->signalled_unix_ms;
      restarted_ms =
          fault_ms + static_cast<std::int64_t>((injected->gone_s + injected->restart_s) * 1000);
      out["pids"] = injected->pids;
      out["gone_s"] = Round(injected->gone_s, 2);
      out["restart_s"] = Round(injected->restart_s, 2);
      if (injected->escalated) {
        out["sigterm_timed_out"] = true;
      }
      if (injected->restart_exit != 0) {
        out["error"] = fmt::format("the restart command exited with {}: {}", injected->restart_exit,
                                   injected->restart_output);
      }
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));
    if (with_commands) {
      commands = probe.Stop();
      if (!config.pg_url.empty()) {
        commands["recorded"] =
            RecordedCommands(config.pg_url, run.context.product_id + "\\_", commands_since);
      }
    } else {
      commands = NotAvailable(Describe(probe.Check()));
    }
  }
  publisher.join();
  out["acked"] = tracker.acked_count();
  out["expected"] = tracker.devices() * static_cast<std::size_t>(tracker.per_device());
  if (published.timed_out) {
    out["publish_timed_out"] = true;
  }

  tracker.WaitArrivals(run.context.Stall(), deadline);
  const auto missing = tracker.MissingOnSubscription();
  Json subscription = tracker.SubscriptionSummary();
  subscription["lost"] = missing.size();
  // Lost: acknowledged reports missing from the subscription or the history (each once), and
  // every device whose shadow misses its last report.
  std::set<std::pair<std::size_t, int>> lost(missing.begin(), missing.end());
  Json history = PhaseHistory(run, tracker, since, started, lost);
  Json shadow = PhaseShadow(run, tracker, started);
  out["lost"] = lost.size() + CountOf(shadow, "devices_stale");
  out["lost_subscription"] = missing.size();
  out["lost_history"] = history.contains("not_available") ? history : history["lost"];
  out["shadow_stale_devices"] =
      shadow.contains("not_available") ? shadow : Json(CountOf(shadow, "devices_stale"));
  out["duplicates"] = CountOf(subscription, "duplicates") + CountOf(history, "duplicates");
  out["duplicates_subscription"] = subscription["duplicates"];
  out["duplicates_history"] = CountOf(history, "duplicates");
  out["redelivered_subscription"] = subscription["redelivered"];
  out["subscription_latency"] = subscription["latency"];
  if (!config.gateway_metrics.empty()) {
    // Device uplink the gateway refused (counted, logged, not handed on): it explains loss
    // that no owner caused, e.g. a backlog delivered faster than the per-device rate limit.
    out["gateway_rejected"] = RejectionsBetween(rejected_before, GatewayRejections(config));
  }
  if (fault && injected) {
    const auto flow_back = tracker.FlowBack(fault_ms);
    const auto caught_up = tracker.CaughtUp(fault_ms, restarted_ms);
    out["flow_back_s"] = flow_back ? Json(Round(*flow_back, 2)) : NotAvailable("nothing arrived");
    out["caught_up_s"] = caught_up ? Json(Round(*caught_up, 2)) : NotAvailable("nothing arrived");
  }
  if (fault) {
    out["commands"] = commands;
    const Json bound = LossBound(*fault, run.configuration, run.rate);
    out["bound"] = bound;
    if (fault->bounded && bound.contains("reports")) {
      out["within_bound"] = out["lost"].get<std::size_t>() <= bound["reports"].get<std::size_t>();
    }
  }
  return out;
}

std::string Cell(const Json& value, const char* unit = "") {
  if (value.is_number_float()) {
    return fmt::format("{:.2f}{}", value.get<double>(), unit);
  }
  if (value.is_number()) {
    return fmt::format("{}{}", value.dump(), unit);
  }
  return "-";
}

/// The human table of the phases.
std::string Table(const Json& phases) {
  constexpr const char* kRow =
      "{:<22} {:>7} {:>6} {:>15} {:>5} {:>6} {:>9} {:>9} {:>8} {:>16} {:>10}\n";
  std::string out =
      fmt::format(fmt::runtime(kRow), "fault", "acked", "lost", "sub/hist/shadow", "dup", "gw rej",
                  "flow back", "caught up", "restart", "cmds ok/to/f/st", "bound");
  for (const auto& phase : phases) {
    const Json& commands = phase.value("commands", Json::object());
    const std::string cmds =
        commands.contains("issued")
            ? fmt::format("{}/{}/{}/{}", commands["succeeded"].get<int>(),
                          commands["timed_out"].get<int>(), commands["failed"].get<int>(),
                          commands["stuck"].get<int>())
            : "-";
    std::string rejected = "-";
    if (phase.contains("gateway_rejected")) {
      std::int64_t sum = 0;
      for (const auto& [reason, count] : phase["gateway_rejected"].items()) {
        sum += count.get<std::int64_t>();
      }
      rejected = std::to_string(sum);
    }
    const Json& bound = phase.value("bound", Json());
    out +=
        fmt::format(fmt::runtime(kRow), phase["fault"].get<std::string>(),
                    Cell(phase.value("acked", Json())), Cell(phase.value("lost", Json())),
                    fmt::format("{}/{}/{}", Cell(phase.value("lost_subscription", Json())),
                                Cell(phase.value("lost_history", Json())),
                                Cell(phase.value("shadow_stale_devices", Json()))),
                    Cell(phase.value("duplicates", Json())), rejected,
                    Cell(phase.value("flow_back_s", Json()), " s"),
                    Cell(phase.value("caught_up_s", Json()), " s"),
                    Cell(phase.value("restart_s", Json()), " s"), cmds,
                    bound.is_object() && bound.contains("reports") ? Cell(bound["reports"]) : "-");
  }
  return out;
}

}  // namespace

nlohmann::json RunFaults(BenchContext& context) {
  const BenchConfig& config = context.config;
  const auto devices_count = static_cast<std::size_t>(config.ingest_devices);
  const int per_device = std::max(1, static_cast<int>(config.publish_rate * config.fault_period));
  const double rate = config.publish_rate * static_cast<double>(devices_count);
  Json out = {{"devices", devices_count},
              {"rate_per_device", config.publish_rate},
              {"rate", rate},
              {"period_s", config.fault_period},
              {"reports_per_device_per_phase", per_device},
              {"qos", 1}};

  std::vector<FaultSpec> faults;
  for (const auto& text : config.faults) {
    auto fault = ParseFault(text);
    if (!fault.ok()) {
      out["error"] = std::string(fault.status().message());
      return out;
    }
    faults.push_back(*fault);
  }
  if (config.restart_command.empty()) {
    out["error"] =
        "no restart command (--restart-command, IOT_BENCH_RESTART_COMMAND): the "
        "bench restarts what it kills with it (scripts/bench.sh passes "
        "scripts/stack.sh start)";
    return out;
  }
  const auto port_of = [](const std::string& address, int fallback) {
    const auto colon = address.rfind(':');
    return static_cast<std::uint16_t>(
        colon == std::string::npos ? fallback : std::atoi(address.c_str() + colon + 1));
  };
  std::map<std::string, std::uint16_t> ports = {
      {"thing-model", port_of(config.thing_model_addr, 0)},
      {"device-gateway", port_of(config.gateway_addr, 0)},
      {"shadow", port_of(config.shadow_addr, 0)},
      {"command-dispatch", port_of(config.command_dispatch_addr, 0)},
      {"rule-forwarding", port_of(config.rule_forwarding_addr, 0)},
      {"mosquitto", static_cast<std::uint16_t>(context.broker.port)}};
  for (const auto& [name, url, fallback] :
       {std::tuple{"redis", config.redis_url, std::uint16_t{6379}},
        std::tuple{"postgres", config.pg_url, std::uint16_t{5432}}}) {
    if (!url.empty()) {
      auto parsed = iot::common::ParseUrl(url, fallback);
      ports[name] = parsed.ok() ? static_cast<std::uint16_t>(parsed->port) : 0;
    }
  }
  StackControl control(ports, config.restart_command);
  for (const auto& fault : faults) {
    if (auto status = control.Check(fault.target); !status.ok()) {
      out["error"] = fmt::format("fault {}: {}", fault.name, std::string(status.message()));
      return out;
    }
  }

  const Json configuration = {{"mosquitto", BrokerPersistence(config.mosquitto_conf)},
                              {"redis", RedisDurability(config.redis_url)},
                              {"postgres", PostgresDurability(config.pg_url)}};
  out["configuration"] = configuration;

  auto devices = context.thing_model.AddDevices(context.product_id, "f", config.ingest_devices, 8);
  auto probe = context.thing_model.AddDevices(context.product_id, "probe", 1, 1);
  if (!devices.ok() || !probe.ok()) {
    out["error"] =
        "creating devices: " + Describe(devices.ok() ? probe.status() : devices.status());
    return out;
  }
  // Phase 1 is the baseline, phase 2 + i the fault i. Trackers exist before the subscription
  // starts: its handler finds them by the report's phase without a lock.
  std::vector<std::unique_ptr<PhaseTracker>> trackers;
  for (std::size_t i = 0; i <= faults.size(); ++i) {
    trackers.push_back(
        std::make_unique<PhaseTracker>(devices_count, per_device, static_cast<int>(i) + 1));
  }
  std::atomic<bool> probe_seen{false};
  Subscription subscription(context, [&](const SubscriptionMessage& message) {
    if (message.device_id == (*probe)[0].device_id) {
      probe_seen.store(true);
      return;
    }
    const Json* properties = FindBenchProperties(message.payload);
    if (properties == nullptr) {
      return;
    }
    const int phase = properties->value("phase", 0);
    if (phase >= 1 && static_cast<std::size_t>(phase) <= trackers.size()) {
      trackers[static_cast<std::size_t>(phase) - 1]->Arrived(
          DeviceIndex(message.device_id, context.product_id, "f"), *properties, message.delivery_id,
          UnixMillis());
    }
  });
  if (auto status = subscription.Start(); !status.ok()) {
    out["error"] = "subscription: " + Describe(status);
    return out;
  }
  FleetOptions options = context.FleetFor(context.broker);
  options.answer_commands = true;
  Fleet fleet(options, *devices);
  const ConnectResult connected = fleet.Connect(context.Deadline());
  if (connected.connected != devices_count) {
    out["error"] = fmt::format("only {} of {} devices connected: {}", connected.connected,
                               devices_count, connected.first_error);
    return out;
  }
  {
    // The rule is live once a probe report comes out of the subscription.
    Fleet prober(context.FleetFor(context.broker), *probe);
    (void)prober.Connect(context.Deadline());
    const auto probe_deadline = Clock::now() + kProbeWait;
    while (!probe_seen.load() && Clock::now() < probe_deadline && subscription.ended().ok()) {
      (void)prober.Publish(1, Reports(0), probe_deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (!probe_seen.load()) {
      out["error"] = "the probe report never came out of the subscription";
      return out;
    }
  }

  FaultsRun run{.context = context,
                .control = control,
                .fleet = fleet,
                .devices = *devices,
                .trackers = trackers,
                .configuration = configuration,
                .rate = rate};
  Json phases = Json::array();
  for (std::size_t i = 0; i <= faults.size(); ++i) {
    const std::optional<FaultSpec> fault =
        i == 0 ? std::nullopt : std::optional<FaultSpec>(faults[i - 1]);
    Json phase = RunPhase(run, *trackers[i], fault);
    std::cout << phase.dump() << std::endl;  // one JSON line per phase, as it completes
    phases.push_back(std::move(phase));
  }
  subscription.Stop();
  fleet.Disconnect();
  out["phases"] = phases;
  out["table"] = Table(phases);
  out["device_reconnects"] = fleet.reconnects();
  out["device_republished"] = fleet.republished();
  out["subscription_resubscribed"] = subscription.resubscribed();
  return out;
}

}  // namespace iotbench
