#include <condition_variable>
#include <mutex>
#include <thread>

#include "destinations/history.h"
#include "history_handlers.h"
#include "iot/common/logging.h"
#include "iot/common/service_host.h"
#include "iot/rule_forwarding/history_subscriptions.h"

namespace iot::rule_forwarding {
namespace {

using std::chrono::milliseconds;

/// A thread that runs a few tasks, each at its own interval, until stopped.
class PeriodicTasks {
 public:
  struct Task {
    milliseconds interval;
    std::function<void()> run;
    std::chrono::steady_clock::time_point due{};
  };

  explicit PeriodicTasks(std::vector<Task> tasks) : tasks_(std::move(tasks)) {}
  ~PeriodicTasks() { Stop(); }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      auto next = std::chrono::steady_clock::time_point::max();
      for (Task& task : tasks_) {
        if (std::chrono::steady_clock::now() >= task.due) {
          lock.unlock();
          task.run();
          lock.lock();
          task.due = std::chrono::steady_clock::now() + task.interval;
        }
        next = std::min(next, task.due);
      }
      cv_.wait_until(lock, next, [&] { return stopping_; });
    }
  }

  std::vector<Task> tasks_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

HistoryConfig ReadHistoryConfig(common::EnvReader& env) {
  const std::string p = "IOT_RULE_FORWARDING_";
  HistoryConfig config;
  config.retention_days = env.Int(p + "HISTORY_RETENTION_DAYS", 30, 1, 3650);
  config.days_ahead = env.Int(p + "HISTORY_DAYS_AHEAD", 3, 1, 60);
  config.maintenance_interval =
      env.Duration(p + "HISTORY_MAINTENANCE_INTERVAL", std::chrono::minutes(10));
  config.batch_rows = static_cast<size_t>(env.Int(p + "HISTORY_BATCH_ROWS", 5000, 1, 100'000));
  config.buffer_rows =
      static_cast<size_t>(env.Int(p + "HISTORY_BUFFER_ROWS", 50'000, 1, 10'000'000));
  config.group_metrics_interval =
      env.Duration(p + "GROUP_METRICS_INTERVAL", std::chrono::seconds(10));
  return config;
}

nlohmann::json ToJson(const HistoryConfig& config) {
  return {{"history_retention_days", config.retention_days},
          {"history_days_ahead", config.days_ahead},
          {"history_maintenance_interval_ms", config.maintenance_interval.count()},
          {"history_batch_rows", config.batch_rows},
          {"history_buffer_rows", config.buffer_rows},
          {"group_metrics_interval_ms", config.group_metrics_interval.count()}};
}

void RegisterHistoryAndSubscriptions(
    common::ServiceContext& context, const HistoryConfig& config,
    std::map<std::string, std::shared_ptr<Destination>, std::less<>>& registry) {
  auto auth = std::make_shared<common::Authenticator>(
      std::make_shared<common::RedisKeyResolver>(context.redis));

  // History.
  auto store = std::make_shared<PgHistoryStore>(
      context.postgres,
      HistoryRetention{.retention_days = config.retention_days, .days_ahead = config.days_ahead});
  auto history_metrics = std::make_shared<HistoryMetrics>(context.host.metrics());
  auto writer = std::make_shared<HistoryWriter>(
      [store, history_metrics](std::span<const HistoryRow> rows) {
        auto stored = store->Insert(rows);
        if (stored.ok()) {
          history_metrics->stored.Increment(static_cast<double>(*stored));
          history_metrics->duplicate.Increment(static_cast<double>(rows.size()) -
                                               static_cast<double>(*stored));
        }
        return stored;
      },
      HistoryWriterOptions{
          .max_batch_rows = config.batch_rows,
          .max_buffered_rows = config.buffer_rows,
      });
  registry["history"] = std::make_shared<HistoryDestination>(store, writer, history_metrics);
  context.host.AddService(std::make_shared<HistoryHandler>(store, auth));
  context.host.AddStartupTask("history partitions",
                              [store] { return store->Maintain(NowMs()).status(); });

  // Subscriptions.
  auto groups = std::make_shared<PgGroupStore>(context.postgres);
  auto streams = std::make_shared<GroupStreams>(context.redis);
  auto hub = std::make_shared<SubscriptionHub>();
  auto subscription_metrics = std::make_shared<SubscriptionMetrics>(context.host.metrics());
  registry["consumer_group"] = MakeConsumerGroupDestination(groups, streams);
  context.host.AddService(std::make_shared<SubscriptionsHandler>(
      SubscriptionsDeps{.groups = groups,
                        .streams = streams,
                        .auth = auth,
                        .hub = hub,
                        .metrics = subscription_metrics,
                        .redis_url = context.backend.redis_url}));

  auto tasks = std::make_shared<PeriodicTasks>(std::vector<PeriodicTasks::Task>{
      {.interval = config.maintenance_interval,
       .run =
           [store, history_metrics] {
             auto dropped = store->Maintain(NowMs());
             if (!dropped.ok()) {
               common::LogWarn("history maintenance failed",
                               {{"error", std::string(dropped.status().message())}});
             } else if (!dropped->empty()) {
               history_metrics->partitions_dropped.Increment(static_cast<double>(dropped->size()));
               common::LogInfo("history partitions dropped", {{"partitions", *dropped}});
             }
           }},
      {.interval = config.group_metrics_interval,
       .run =
           [groups, streams, subscription_metrics, writer, history_metrics] {
             history_metrics->buffered.Set(static_cast<double>(writer->buffered()));
             auto all = groups->ListAll();
             if (!all.ok()) {
               return;
             }
             std::vector<std::pair<ConsumerGroupSettings, GroupStats>> stats;
             for (ConsumerGroupSettings& g : *all) {
               auto st = streams->Stats(StreamKey(g.tenant_id, g.group_name));
               if (st.ok() || absl::IsNotFound(st.status())) {
                 stats.emplace_back(std::move(g), st.value_or(GroupStats{}));
               }
             }
             subscription_metrics->SetGroups(stats);
           }},
  });
  context.host.OnReady([tasks] { tasks->Start(); });
  context.host.OnShutdown([tasks, hub] {
    hub->StopAll();
    tasks->Stop();
  });
}

}  // namespace iot::rule_forwarding
