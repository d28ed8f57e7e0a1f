#pragma once

// Application subscriptions (consumer groups) on Redis Streams (docs/subscriptions.md): one
// stream per group `rf:cg:{tenant}:{group}` with one Redis consumer group "app" on it; group
// settings in PostgreSQL `rule_forwarding.consumer_groups`.

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "iot/common/postgres.h"
#include "iot/common/redis.h"
#include "iot/rule_forwarding/destination.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
template <typename T>
class Family;
}  // namespace prometheus

namespace iot::rule_forwarding {

struct ConsumerGroupSettings {
  std::string tenant_id;
  std::string group_name;
  std::string description;
  int64_t max_backlog_length = 0;       ///< 0: default 100000
  int64_t max_backlog_age_seconds = 0;  ///< 0: default 86400
  int32_t ack_timeout_seconds = 0;      ///< 0: default 30
  std::string create_time;              ///< set by the store
};

/// `[A-Za-z0-9_.-]{1,64}`, else INVALID_ARGUMENT naming `field`.
absl::Status CheckName(std::string_view field, std::string_view name);
/// Fills defaults and checks ranges: INVALID_ARGUMENT naming the field.
absl::StatusOr<ConsumerGroupSettings> NormalizeGroup(ConsumerGroupSettings group);
/// The group's stream, `rf:cg:{tenant}:{group}`.
std::string StreamKey(std::string_view tenant_id, std::string_view group_name);

/// Port: consumer groups by tenant.
class GroupStore {
 public:
  virtual ~GroupStore() = default;
  /// ALREADY_EXISTS when the tenant has a group of that name.
  virtual absl::StatusOr<ConsumerGroupSettings> Create(const ConsumerGroupSettings& group) = 0;
  /// NOT_FOUND when absent.
  virtual absl::StatusOr<ConsumerGroupSettings> Get(const std::string& tenant_id,
                                                    const std::string& group_name) = 0;
  virtual absl::Status Delete(const std::string& tenant_id, const std::string& group_name) = 0;
  /// Groups after `marker` (a group name), name order, `limit` + 1 at most.
  virtual absl::StatusOr<std::vector<ConsumerGroupSettings>> List(const std::string& tenant_id,
                                                                  int32_t limit,
                                                                  const std::string& marker) = 0;
  /// Every tenant's groups (the backlog gauges).
  virtual absl::StatusOr<std::vector<ConsumerGroupSettings>> ListAll() = 0;
};

class PgGroupStore final : public GroupStore {
 public:
  explicit PgGroupStore(std::shared_ptr<common::PgPool> pool) : pool_(std::move(pool)) {}
  absl::StatusOr<ConsumerGroupSettings> Create(const ConsumerGroupSettings& group) override;
  absl::StatusOr<ConsumerGroupSettings> Get(const std::string& tenant_id,
                                            const std::string& group_name) override;
  absl::Status Delete(const std::string& tenant_id, const std::string& group_name) override;
  absl::StatusOr<std::vector<ConsumerGroupSettings>> List(const std::string& tenant_id,
                                                          int32_t limit,
                                                          const std::string& marker) override;
  absl::StatusOr<std::vector<ConsumerGroupSettings>> ListAll() override;

 private:
  std::shared_ptr<common::PgPool> pool_;
};

/// One message of a group's stream.
struct GroupMessage {
  std::string id;  ///< stream entry id: what the consumer acks
  std::string delivery_id;
  std::string device_id;
  std::string product_id;
  std::string resource;
  std::string event;
  std::string topic;
  std::string rule_id;
  std::string payload_json;
  int64_t event_time_ms = 0;
  bool redelivered = false;
};

struct GroupStats {
  int64_t length = 0;   ///< entries kept in the stream (XLEN)
  int64_t pending = 0;  ///< delivered, not acked yet
  int64_t lag = 0;      ///< not delivered yet (-1: Redis cannot tell, after a trim)
};

/// The Redis Streams operations of consumer groups. Thread-safe (as the RedisClient is).
/// A missing stream or Redis group (NOGROUP: Redis restarted or flushed) is NOT_FOUND; a
/// connection problem is UNAVAILABLE.
class GroupStreams {
 public:
  explicit GroupStreams(std::shared_ptr<common::RedisClient> redis) : redis_(std::move(redis)) {}

  /// XGROUP CREATE key app 0 MKSTREAM; an existing group is fine.
  absl::Status EnsureGroup(const std::string& key);
  /// XADDs the deliveries in order (MAXLEN ~ the group's length, then XTRIM MINID ~ its age);
  /// a delivery_id already added within the backlog age is skipped, so a retried batch adds
  /// nothing twice.
  absl::Status Append(const ConsumerGroupSettings& group, std::span<const Delivery> batch);
  /// XREADGROUP: new messages (`pending` false, blocking up to `block`), or this consumer's own
  /// delivered-but-unacked ones after `after_id` (`pending` true, marked redelivered).
  absl::StatusOr<std::vector<GroupMessage>> Read(const std::string& key,
                                                 const std::string& consumer, int count,
                                                 bool pending, const std::string& after_id,
                                                 std::chrono::milliseconds block);
  /// XAUTOCLAIM: messages any consumer left unacked for `min_idle`, now this consumer's.
  absl::StatusOr<std::vector<GroupMessage>> Claim(const std::string& key,
                                                  const std::string& consumer, int count,
                                                  std::chrono::milliseconds min_idle);
  absl::Status Ack(const std::string& key, std::span<const std::string> ids);
  absl::StatusOr<GroupStats> Stats(const std::string& key);
  /// Deletes the stream (its dedupe keys age out by themselves) and leaves a tombstone for a
  /// minute that makes Append fail with NOT_FOUND (a replica's cached settings of the deleted
  /// group must not recreate the stream). EnsureGroup removes it.
  absl::Status Drop(const std::string& key);

 private:
  std::shared_ptr<common::RedisClient> redis_;
};

/// iot_rf_subscription_messages_total{kind}: delivered, redelivered, acked;
/// iot_rf_subscription_consumers: open Subscribe streams; per group {tenant, group}:
/// iot_rf_group_backlog (retained, not acked = pending + lag), iot_rf_group_lag,
/// iot_rf_group_pending, iot_rf_group_length.
struct SubscriptionMetrics {
  explicit SubscriptionMetrics(prometheus::Registry& registry);

  prometheus::Counter& delivered;
  prometheus::Counter& redelivered;
  prometheus::Counter& acked;
  prometheus::Gauge& consumers;
  prometheus::Family<prometheus::Gauge>& backlog;
  prometheus::Family<prometheus::Gauge>& lag;
  prometheus::Family<prometheus::Gauge>& pending;
  prometheus::Family<prometheus::Gauge>& length;

  /// Sets the per-group gauges to `stats` and removes those of groups not listed.
  void SetGroups(const std::vector<std::pair<ConsumerGroupSettings, GroupStats>>& groups);

 private:
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, std::vector<prometheus::Gauge*>> gauges_;
};

/// One consumer's Subscribe stream: hands it its own unacked messages first (a consumer that
/// comes back), then messages other consumers left unacked past the ack timeout, then new ones,
/// never more than max_in_flight unacked at once. Redis errors are retried with backoff, and
/// after one its own unacked messages are read again first (a read whose reply was lost made
/// them its own), without those its client holds or acked; a
/// vanished Redis group is recreated (MKSTREAM) unless the group was deleted.
class SubscriptionSession {
 public:
  /// Sends one message to the client; false when the client is gone.
  using Sender = std::function<bool(const GroupMessage&)>;

  SubscriptionSession(ConsumerGroupSettings group, std::string consumer, int max_in_flight,
                      std::shared_ptr<GroupStreams> streams, std::shared_ptr<GroupStore> groups,
                      std::shared_ptr<SubscriptionMetrics> metrics);

  /// Runs until Stop(), a failed send, or the group's deletion (NOT_FOUND).
  absl::Status Run(const Sender& send);
  /// Acks messages (from the client's reader thread). A failed XACK is retried by Run().
  void Ack(std::vector<std::string> ids);
  void Stop();

 private:
  bool WaitStop(std::chrono::milliseconds delay);
  /// Sends `messages`; false when the client is gone.
  bool SendAll(const Sender& send, std::vector<GroupMessage> messages);
  void ExpireInFlight();
  /// Removes from this consumer's re-read pending entries those its client holds (sent, not
  /// acked yet) or has acked (XACK still to be retried): only the ones it never got remain.
  void DropHeld(std::vector<GroupMessage>& pending);
  int Room();

  ConsumerGroupSettings group_;
  std::string key_;
  std::string consumer_;
  int max_in_flight_;
  std::shared_ptr<GroupStreams> streams_;
  std::shared_ptr<GroupStore> groups_;
  std::shared_ptr<SubscriptionMetrics> metrics_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
  std::map<std::string, std::chrono::steady_clock::time_point> in_flight_;
  std::vector<std::string> unacked_;  ///< acks whose XACK failed
};

/// `consumer_group`: appends deliveries to the stream of the group named in the action config
/// {"group": "name"} of the delivery's tenant. A group that does not exist is a permanent
/// failure (FAILED_PRECONDITION: dead letter). Group settings are cached for a second.
std::shared_ptr<Destination> MakeConsumerGroupDestination(std::shared_ptr<GroupStore> groups,
                                                          std::shared_ptr<GroupStreams> streams);

}  // namespace iot::rule_forwarding
