#pragma once

// InternalIngest: records from the device-gateway → rules → history, consumer groups, outbox.
//
// When Ingest answers OK: every record of the batch but the rejected ones (returned: malformed,
// or an envelope that is not JSON) is taken: its property values are in the telemetry history
// (the built-in `history` delivery, written directly through the history writer's group
// commit), its consumer-group deliveries are appended to their Redis streams, and every other
// delivery it produced is stored in the durable outbox (PostgreSQL, one INSERT per batch) and
// queued in the dispatcher (memory, bounded). From then on the service owns them: delivered,
// or recorded as a dead letter; what a replica leaves behind (crash, SIGTERM) is taken over
// from the outbox by another replica. A full queue or history buffer answers
// RESOURCE_EXHAUSTED, Redis or PostgreSQL down UNAVAILABLE, so the gateway retries
// (backpressure).
//
// Deduplication never claims a record before its work is done: every effect is idempotent on
// the record's message id (history rows and stream entries on the delivery id, outbox rows
// keyed by it), so a retry, a redelivery or a concurrent duplicate (two gateway replicas, a
// retry overlapping a slow first attempt) redoes nothing twice and loses nothing; the `done`
// mark written once a record's effects are durable only spares a later redelivery the rules.
// docs/rules.md, "Delivery guarantees".

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "iot/common/rejections.h"
#include "iot/rule_forwarding/dispatcher.h"
#include "iot/rule_forwarding/rules.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace iot::common {
class RedisClient;
}  // namespace iot::common

namespace iot::rule_forwarding {

/// One ForwardRecord, without proto types.
struct IngestRecord {
  std::string message_id;
  std::string tenant_id;
  std::string device_id;
  std::string product_id;
  std::string node_id;
  std::string resource;
  std::string event;
  std::string topic;
  int64_t event_time_unix_ms = 0;
  std::string envelope_json;
};

/// Port: remembers which records were taken completely (at-least-once from the gateway), so a
/// redelivery skips the rules. Only an optimisation: every effect is idempotent anyway.
class Dedupe {
 public:
  virtual ~Dedupe() = default;
  /// For each id, true when the record was marked done.
  virtual absl::StatusOr<std::vector<bool>> Done(const std::vector<std::string>& ids) = 0;
  /// Marks the records done: called only once every effect of theirs is durable.
  virtual absl::Status MarkDone(const std::vector<std::string>& ids) = 0;
};

/// `rf:msg:{id}`: MGET to check. The marks are written by a thread of its own that gathers the
/// MarkDone calls of concurrent Ingests into pipelines of `SET ... PX ttl`, so marking costs an
/// Ingest no Redis round trip; marks still waiting to be written count as done on this replica.
/// Beyond `max_pending` ids waiting, MarkDone writes them itself (bounded memory). A mark lost
/// with the process only makes a redelivery run its record's idempotent effects again.
class RedisDedupe final : public Dedupe {
 public:
  RedisDedupe(std::shared_ptr<common::RedisClient> redis, std::chrono::milliseconds ttl,
              size_t max_pending = 100'000);
  /// Writes what is still waiting, then stops the thread.
  ~RedisDedupe() override;
  RedisDedupe(const RedisDedupe&) = delete;
  RedisDedupe& operator=(const RedisDedupe&) = delete;

  absl::StatusOr<std::vector<bool>> Done(const std::vector<std::string>& ids) override;
  absl::Status MarkDone(const std::vector<std::string>& ids) override;

 private:
  absl::Status Write(const std::vector<std::string>& ids);
  void Run();

  std::shared_ptr<common::RedisClient> redis_;
  std::chrono::milliseconds ttl_;
  size_t max_pending_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::unordered_set<std::string> pending_;  ///< marked, not written yet
  std::unordered_set<std::string> writing_;  ///< being written by the thread
  bool stopping_ = false;
  std::thread writer_;
};

/// iot_rf_ingested_records_total{outcome} (accepted, duplicate, rejected),
/// iot_rf_rejected_records_total{reason} (malformed, invalid_envelope) and
/// iot_rf_rule_matches_total.
struct IngestMetrics {
  explicit IngestMetrics(prometheus::Registry& registry);
  prometheus::Family<prometheus::Counter>& records;
  prometheus::Counter& matches;
  common::RejectionCounter rejections;
};

/// The deliveries one record produces: one per action of every rule of its tenant whose scope
/// and SQL match, plus a `history` delivery for property reports when `with_history`.
std::vector<DispatchItem> Route(const RuleSet& rules, const IngestRecord& record,
                                const nlohmann::json& envelope, int64_t receive_time_ms,
                                bool with_history);

class IngestService {
 public:
  using RulesSource = std::function<std::shared_ptr<const RuleSet>()>;

  /// `outbox` may be null (nothing durable: tests, benchmarks). `history` (may be null): the
  /// built-in history deliveries go to it before Ingest answers, instead of through the outbox
  /// and the dispatcher. `direct`: destinations whose rule-action deliveries are made the same
  /// way (consumer groups: a Redis stream append, idempotent on the delivery id), before the
  /// history; the dispatcher then only sees the other actions.
  IngestService(RulesSource rules, std::shared_ptr<Dedupe> dedupe,
                std::shared_ptr<Dispatcher> dispatcher, std::shared_ptr<IngestMetrics> metrics,
                std::shared_ptr<Outbox> outbox, std::shared_ptr<Destination> history = nullptr,
                std::vector<std::shared_ptr<Destination>> direct = {});

  /// Takes a batch (see the file comment for what OK means) and returns the records it refused
  /// for good, each counted and logged: `malformed` (no message id, tenant or resource; the
  /// detail names `records[i].<field>`) and `invalid_envelope` (not a JSON object). A record
  /// repeated within the batch is taken once.
  absl::StatusOr<common::Rejected> Ingest(const std::vector<IngestRecord>& records);

 private:
  /// Moves the deliveries of `destination`'s type (only the built-in ones, without a rule, when
  /// `built_in_only`) out of `items` and delivers them; on a permanent failure they go back into
  /// `items` (to the dispatcher, which retries and dead-letters). Transient failures are
  /// returned.
  static absl::Status DeliverNow(Destination& destination, bool built_in_only,
                                 std::vector<DispatchItem>& items);

  /// Stores `items` in the outbox and queues them. Items of a record already stored by another
  /// attempt are taken over (same rows): nothing a concurrent attempt stored can be lost by
  /// this one's failure, which leaves its rows for the sweep instead of deleting them.
  absl::Status StoreAndQueue(std::vector<DispatchItem> items);

  RulesSource rules_;
  std::shared_ptr<Dedupe> dedupe_;
  std::shared_ptr<Dispatcher> dispatcher_;
  std::shared_ptr<IngestMetrics> metrics_;
  std::shared_ptr<Outbox> outbox_;
  std::shared_ptr<Destination> history_;
  std::vector<std::shared_ptr<Destination>> direct_;
};

}  // namespace iot::rule_forwarding
