#include "iot/rule_forwarding/dispatcher.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <exception>
#include <span>
#include <utility>

#include "iot/common/backoff.h"
#include "iot/common/logging.h"
#include "iot/common/metrics.h"

namespace iot::rule_forwarding {
namespace {

bool Retryable(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded ||
         status.code() == absl::StatusCode::kResourceExhausted;
}

bool SameAction(const DispatchItem& a, const DispatchItem& b) {
  return a.action_index == b.action_index && a.delivery.rule_id == b.delivery.rule_id &&
         a.delivery.tenant_id == b.delivery.tenant_id;
}

}  // namespace

DispatcherMetrics::DispatcherMetrics(prometheus::Registry& registry)
    : deliveries(prometheus::BuildCounter()
                     .Name("iot_rf_deliveries_total")
                     .Help("Rule action deliveries by destination type and outcome (delivered, "
                           "retried, dead_lettered)")
                     .Register(registry)),
      dead_letters(prometheus::BuildCounter()
                       .Name("iot_rf_dead_letters_total")
                       .Help("Deliveries given up and recorded as dead letters")
                       .Register(registry)),
      queue_depth(prometheus::BuildGauge()
                      .Name("iot_rf_queue_depth")
                      .Help("Deliveries queued or in flight per destination type")
                      .Register(registry)),
      duration(prometheus::BuildHistogram()
                   .Name("iot_rf_delivery_duration_seconds")
                   .Help("Duration of one batch delivery attempt per destination type")
                   .Register(registry)) {}

struct Dispatcher::Lane {
  std::string type;
  std::shared_ptr<Destination> destination;
  size_t max_batch = 1;
  size_t capacity = 1;
  std::deque<DispatchItem> queue;
  size_t in_flight = 0;
  std::thread thread;
  prometheus::Gauge* depth = nullptr;
};

Dispatcher::Dispatcher(DestinationRegistry destinations,
                       std::shared_ptr<DeadLetterSink> dead_letters,
                       std::shared_ptr<DispatcherMetrics> metrics, DispatcherOptions options,
                       std::shared_ptr<Outbox> outbox)
    : destinations_(std::move(destinations)),
      dead_letters_(std::move(dead_letters)),
      metrics_(std::move(metrics)),
      options_(std::move(options)),
      outbox_(std::move(outbox)) {
  for (const auto& [type, destination] : destinations_) {
    auto batch = options_.max_batch_by_type.find(type);
    auto workers = options_.workers_by_type.find(type);
    const size_t n = std::max<size_t>(
        1, workers != options_.workers_by_type.end() ? workers->second : options_.workers);
    for (size_t i = 0; i < n; ++i) {
      auto lane = std::make_unique<Lane>();
      lane->type = type;
      lane->destination = destination;
      lane->max_batch = std::max<size_t>(
          1, batch != options_.max_batch_by_type.end() ? batch->second : options_.max_batch);
      lane->capacity = std::max<size_t>(1, options_.queue_capacity / n);
      if (metrics_) {
        lane->depth = &metrics_->queue_depth.Add({{"type", type}});
      }
      lanes_.emplace(type, std::move(lane));
    }
  }
}

Dispatcher::Lane* Dispatcher::LaneOf(const DispatchItem& item) {
  auto [begin, end] = lanes_.equal_range(item.action_type);
  const auto n = static_cast<size_t>(std::distance(begin, end));
  if (n == 0) {
    return nullptr;
  }
  // One action's deliveries always share a worker: their order is kept.
  const size_t key =
      std::hash<std::string>{}(item.delivery.tenant_id + '\x1f' + item.delivery.rule_id + '\x1f' +
                               std::to_string(item.action_index));
  std::advance(begin, static_cast<std::ptrdiff_t>(key % n));
  return begin->second.get();
}

Dispatcher::~Dispatcher() { Stop(std::chrono::milliseconds(0)); }

bool Dispatcher::Has(std::string_view type) const { return destinations_.contains(type); }

absl::Status Dispatcher::RoomFor(const std::vector<DispatchItem>& items,
                                 std::vector<Lane*>& targets) {
  if (closed_) {
    return absl::UnavailableError("rule-forwarding is shutting down");
  }
  std::map<Lane*, size_t> wanted;
  targets.clear();
  targets.reserve(items.size());
  for (const DispatchItem& item : items) {
    Lane* lane = LaneOf(item);
    targets.push_back(lane);
    if (lane != nullptr) {
      ++wanted[lane];
    }
  }
  for (const auto& [lane, count] : wanted) {
    if (lane->queue.size() + count > lane->capacity) {
      return absl::ResourceExhaustedError("the " + lane->type + " delivery queue is full");
    }
  }
  return absl::OkStatus();
}

absl::Status Dispatcher::CheckRoom(const std::vector<DispatchItem>& items) {
  std::lock_guard lock(mu_);
  std::vector<Lane*> targets;
  return RoomFor(items, targets);
}

absl::Status Dispatcher::Enqueue(std::vector<DispatchItem> items) {
  std::vector<DispatchItem> unknown;
  {
    std::lock_guard lock(mu_);
    std::vector<Lane*> targets;
    if (absl::Status room = RoomFor(items, targets); !room.ok()) {
      return room;
    }
    for (size_t i = 0; i < items.size(); ++i) {
      if (targets[i] == nullptr) {
        unknown.push_back(std::move(items[i]));
        continue;
      }
      targets[i]->queue.push_back(std::move(items[i]));
      if (targets[i]->depth) {
        targets[i]->depth->Increment();
      }
    }
  }
  cv_.notify_all();
  for (const DispatchItem& item : unknown) {
    DeadLetter(item.action_type, {item}, "no destination of type '" + item.action_type + "'", 0);
  }
  return absl::OkStatus();
}

void Dispatcher::Start() {
  std::lock_guard lock(mu_);
  if (started_ || closed_) {
    return;
  }
  started_ = true;
  for (auto& [type, lane] : lanes_) {
    lane->thread = std::thread([this, l = lane.get()] { Work(*l); });
  }
}

void Dispatcher::Stop(std::chrono::milliseconds drain) {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
  WaitIdle(drain);
  std::vector<std::pair<std::string, std::vector<DispatchItem>>> leftovers;
  {
    std::lock_guard lock(mu_);
    give_up_ = true;
    if (!started_) {
      for (auto& [type, lane] : lanes_) {
        if (!lane->queue.empty()) {
          leftovers.emplace_back(
              type, std::vector<DispatchItem>(std::make_move_iterator(lane->queue.begin()),
                                              std::make_move_iterator(lane->queue.end())));
          lane->queue.clear();
        }
      }
    }
  }
  cv_.notify_all();
  for (auto& [type, lane] : lanes_) {
    if (lane->thread.joinable()) {
      lane->thread.join();
    }
  }
  for (const auto& [type, items] : leftovers) {
    GiveUp(type, items, "not delivered before shutdown", 0);
  }
}

bool Dispatcher::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] {
    for (const auto& [type, lane] : lanes_) {
      if (!lane->queue.empty() || lane->in_flight > 0) {
        return false;
      }
    }
    return true;
  });
}

size_t Dispatcher::pending() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [type, lane] : lanes_) {
    n += lane->queue.size() + lane->in_flight;
  }
  return n;
}

void Dispatcher::Work(Lane& lane) {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return give_up_ || !lane.queue.empty(); });
    if (lane.queue.empty()) {
      return;
    }
    std::vector<DispatchItem> batch;
    if (give_up_) {
      batch.assign(std::make_move_iterator(lane.queue.begin()),
                   std::make_move_iterator(lane.queue.end()));
      lane.queue.clear();
      lock.unlock();
      GiveUp(lane.type, batch, "not delivered before shutdown", 0);
      return;
    }
    batch.push_back(std::move(lane.queue.front()));
    lane.queue.pop_front();
    while (!lane.queue.empty() && batch.size() < lane.max_batch &&
           SameAction(batch.front(), lane.queue.front())) {
      batch.push_back(std::move(lane.queue.front()));
      lane.queue.pop_front();
    }
    lane.in_flight = batch.size();
    lock.unlock();
    DeliverBatch(lane, batch);
    lock.lock();
    lane.in_flight = 0;
    if (lane.depth) {
      lane.depth->Decrement(static_cast<double>(batch.size()));
    }
    cv_.notify_all();
  }
}

void Dispatcher::DeliverBatch(Lane& lane, std::vector<DispatchItem>& batch) {
  std::vector<Delivery> deliveries;
  deliveries.reserve(batch.size());
  for (DispatchItem& item : batch) {
    deliveries.push_back(std::move(item.delivery));
  }
  const auto restore = [&] {
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i].delivery = std::move(deliveries[i]);
    }
  };
  const double n = static_cast<double>(batch.size());
  common::Backoff backoff(options_.retry_initial, options_.retry_max);
  for (int attempt = 1;; ++attempt) {
    const auto start = std::chrono::steady_clock::now();
    absl::Status status;
    try {
      status = lane.destination->Deliver(std::span<const Delivery>(deliveries));
    } catch (const std::exception& e) {
      status = absl::InternalError(std::string("destination threw: ") + e.what());
    }
    if (metrics_) {
      metrics_->duration.Add({{"type", lane.type}}, common::LatencyBuckets())
          .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    if (status.ok()) {
      if (metrics_) {
        metrics_->deliveries.Add({{"type", lane.type}, {"outcome", "delivered"}}).Increment(n);
      }
      Finished(batch);
      return;
    }
    const std::string error(status.message());
    if (!Retryable(status) || attempt >= options_.max_attempts) {
      restore();
      DeadLetter(lane.type, batch, error, attempt);
      return;
    }
    if (metrics_) {
      metrics_->deliveries.Add({{"type", lane.type}, {"outcome", "retried"}}).Increment(n);
    }
    common::LogWarn("delivery failed, retrying", {{"type", lane.type},
                                                  {"rule_id", deliveries.front().rule_id},
                                                  {"attempt", attempt},
                                                  {"deliveries", batch.size()},
                                                  {"error", error}});
    const auto delay = backoff.Next();
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, delay, [&] { return give_up_; })) {
      lock.unlock();
      restore();
      GiveUp(lane.type, batch, "not delivered before shutdown: " + error, attempt);
      return;
    }
  }
}

void Dispatcher::DeadLetter(const std::string& type, const std::vector<DispatchItem>& items,
                            const std::string& error, int attempts) {
  if (items.empty()) {
    return;
  }
  std::vector<DeadLetterRecord> letters;
  letters.reserve(items.size());
  for (const DispatchItem& item : items) {
    const Delivery& d = item.delivery;
    letters.push_back(DeadLetterRecord{
        .dead_letter_id = {},
        .tenant_id = d.tenant_id,
        .rule_id = d.rule_id,
        .action_index = item.action_index,
        .action_type = type,
        .delivery_id = d.delivery_id,
        .device_id = d.device_id,
        .payload_json = d.payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
        .error = error,
        .attempts = attempts,
        .create_time = {}});
  }
  if (metrics_) {
    const double n = static_cast<double>(items.size());
    metrics_->dead_letters.Add({{"type", type}}).Increment(n);
    metrics_->deliveries.Add({{"type", type}, {"outcome", "dead_lettered"}}).Increment(n);
  }
  common::LogWarn("deliveries dead-lettered", {{"type", type},
                                               {"rule_id", items.front().delivery.rule_id},
                                               {"deliveries", items.size()},
                                               {"attempts", attempts},
                                               {"error", error}});
  if (!dead_letters_) {
    Finished(items);
    return;
  }
  if (absl::Status status = dead_letters_->Add(letters); !status.ok()) {
    // Still in the outbox (if any): retried when another replica takes them over.
    common::LogError(
        "cannot store dead letters",
        {{"type", type}, {"deliveries", items.size()}, {"error", std::string(status.message())}});
    return;
  }
  Finished(items);
}

void Dispatcher::GiveUp(const std::string& type, const std::vector<DispatchItem>& items,
                        const std::string& error, int attempts) {
  std::vector<DispatchItem> without_outbox;
  for (const DispatchItem& item : items) {
    if (item.outbox_id == 0) {
      without_outbox.push_back(item);
    }
  }
  if (without_outbox.size() < items.size()) {
    common::LogInfo("deliveries left in the outbox for another replica",
                    {{"type", type}, {"deliveries", items.size() - without_outbox.size()}});
  }
  DeadLetter(type, without_outbox, error, attempts);
}

void Dispatcher::Finished(const std::vector<DispatchItem>& items) {
  if (!outbox_) {
    return;
  }
  std::vector<int64_t> ids;
  for (const DispatchItem& item : items) {
    if (item.outbox_id != 0) {
      ids.push_back(item.outbox_id);
    }
  }
  if (ids.empty()) {
    return;
  }
  if (absl::Status status = outbox_->Remove(ids); !status.ok()) {
    // Only a duplicate follows: another replica may deliver them again after a takeover.
    common::LogWarn("cannot remove finished deliveries from the outbox",
                    {{"deliveries", ids.size()}, {"error", std::string(status.message())}});
  }
}

}  // namespace iot::rule_forwarding
