#pragma once

// The dispatcher: per-destination bounded queues, batches, retry with exponential backoff, and
// a dead letter after too many failures. Ingest hands it the deliveries a record produced.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "iot/rule_forwarding/destination.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace iot::rule_forwarding {

/// Destination types by their `type()` string.
using DestinationRegistry = std::map<std::string, std::shared_ptr<Destination>, std::less<>>;

/// A delivery that will not be retried any more.
struct DeadLetterRecord {
  std::string dead_letter_id;  ///< assigned by the store
  std::string tenant_id;
  std::string rule_id;
  int action_index = 0;
  std::string action_type;
  std::string delivery_id;
  std::string device_id;
  std::string payload_json;
  std::string error;
  int attempts = 0;
  std::string create_time;
};

/// Port: where dead letters are kept.
class DeadLetterSink {
 public:
  virtual ~DeadLetterSink() = default;
  virtual absl::Status Add(const std::vector<DeadLetterRecord>& letters) = 0;
};

/// One queued delivery. `keep_alive` owns what `delivery.action_config` points into (the
/// compiled rule), so a rule reload never frees a queued delivery's settings.
struct DispatchItem {
  Delivery delivery;
  std::string action_type;
  int action_index = 0;
  std::shared_ptr<const void> keep_alive;
  /// Row of the durable outbox holding this delivery (0: none).
  int64_t outbox_id = 0;
};

/// Port: the durable copy of accepted deliveries (PgOutbox). The dispatcher removes a delivery
/// once it is delivered or dead-lettered; whatever a replica leaves behind (crash, shutdown) is
/// claimed by another replica.
class Outbox {
 public:
  virtual ~Outbox() = default;
  /// Stores `items` and sets their outbox_id; idempotent on the delivery id: an item whose
  /// delivery is stored already (an earlier or concurrent attempt of the same record) gets that
  /// row, now owned by this replica, instead of a second one.
  virtual absl::Status Add(std::vector<DispatchItem>& items) = 0;
  virtual absl::Status Remove(const std::vector<int64_t>& ids) = 0;
  /// Puts deliveries up for takeover by any replica (they could not be queued here).
  virtual absl::Status Disown(const std::vector<int64_t>& ids) = 0;
};

struct DispatcherOptions {
  /// Deliveries queued per destination type (split evenly between its workers); Enqueue fails
  /// with RESOURCE_EXHAUSTED beyond.
  size_t queue_capacity = 10'000;
  /// Worker threads per destination type. Each action's deliveries go to one of them (by tenant,
  /// rule and action), in order; a failing action holds up only the actions sharing its worker.
  size_t workers = 1;
  std::map<std::string, size_t, std::less<>> workers_by_type;
  /// Deliveries handed to one Destination::Deliver call (consecutive ones of one action).
  size_t max_batch = 100;
  /// Per-type overrides of max_batch (webhook: 1, one POST per delivery).
  std::map<std::string, size_t, std::less<>> max_batch_by_type;
  /// Attempts of a batch before its deliveries become dead letters.
  int max_attempts = 5;
  std::chrono::milliseconds retry_initial{200};
  std::chrono::milliseconds retry_max{10'000};
};

/// The dispatcher's metrics: iot_rf_deliveries_total{type,outcome} (delivered, retried,
/// dead_lettered), iot_rf_dead_letters_total{type}, iot_rf_queue_depth{type},
/// iot_rf_delivery_duration_seconds{type} (one Deliver call).
struct DispatcherMetrics {
  explicit DispatcherMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& deliveries;
  prometheus::Family<prometheus::Counter>& dead_letters;
  prometheus::Family<prometheus::Gauge>& queue_depth;
  prometheus::Family<prometheus::Histogram>& duration;
};

/// Thread-safe. Each destination type has `workers` worker threads; every action's deliveries
/// go to the same one and keep the order they were enqueued in (per-device order). A worker
/// retries a failing batch with exponential backoff before it moves on: a failing action delays
/// the other actions of its worker by at most max_attempts backoffs.
class Dispatcher {
 public:
  /// `outbox` (may be null) has finished deliveries removed; with one, Stop() leaves the
  /// deliveries it could not finish there for another replica instead of dead-lettering them.
  Dispatcher(DestinationRegistry destinations, std::shared_ptr<DeadLetterSink> dead_letters,
             std::shared_ptr<DispatcherMetrics> metrics, DispatcherOptions options,
             std::shared_ptr<Outbox> outbox = nullptr);
  /// Stop(0).
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  [[nodiscard]] const DestinationRegistry& destinations() const { return destinations_; }
  [[nodiscard]] bool Has(std::string_view type) const;

  /// Queues every item or none: RESOURCE_EXHAUSTED naming the type whose queue lacks room,
  /// UNAVAILABLE after Stop(). An item of an unregistered type is dead-lettered at once.
  absl::Status Enqueue(std::vector<DispatchItem> items);
  /// What Enqueue(items) would answer now, without queueing (a later Enqueue may still find
  /// the queues fuller): lets a caller refuse a batch before it does work it cannot undo.
  absl::Status CheckRoom(const std::vector<DispatchItem>& items);

  /// Starts the workers.
  void Start();
  /// Stops taking items, keeps delivering until every queue is empty or `drain` has passed,
  /// then gives up on whatever is left and joins: deliveries in the outbox stay there (another
  /// replica takes them over), others are dead-lettered ("not delivered before shutdown").
  void Stop(std::chrono::milliseconds drain);
  /// True once every queue is empty and no batch is in flight, false after `timeout`.
  bool WaitIdle(std::chrono::milliseconds timeout);
  /// Queued plus in-flight deliveries.
  [[nodiscard]] size_t pending() const;

 private:
  struct Lane;

  /// The worker that takes `item`'s action; null for an unregistered type.
  Lane* LaneOf(const DispatchItem& item);
  /// Each item's lane in `targets`, and whether they all fit (under mu_).
  absl::Status RoomFor(const std::vector<DispatchItem>& items, std::vector<Lane*>& targets);
  void Work(Lane& lane);
  /// Delivers one batch with retries, or dead-letters it.
  void DeliverBatch(Lane& lane, std::vector<DispatchItem>& batch);
  void DeadLetter(const std::string& type, const std::vector<DispatchItem>& items,
                  const std::string& error, int attempts);
  /// At shutdown: dead-letters the items that have no outbox row, leaves the others.
  void GiveUp(const std::string& type, const std::vector<DispatchItem>& items,
              const std::string& error, int attempts);
  /// Removes finished items from the outbox.
  void Finished(const std::vector<DispatchItem>& items);

  DestinationRegistry destinations_;
  std::shared_ptr<DeadLetterSink> dead_letters_;
  std::shared_ptr<DispatcherMetrics> metrics_;
  DispatcherOptions options_;
  std::shared_ptr<Outbox> outbox_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool closed_ = false;   ///< no more Enqueue
  bool give_up_ = false;  ///< drain deadline passed: stop retrying
  std::multimap<std::string, std::unique_ptr<Lane>, std::less<>> lanes_;
};

}  // namespace iot::rule_forwarding
