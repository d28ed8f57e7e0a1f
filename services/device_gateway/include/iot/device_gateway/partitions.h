#pragma once

// Uplink partitions: which gateway replica consumes which part of the device uplink.
//
// The broker plugin relays a device's uplink and presence on `iot/up/{partition}/{id}/...` and
// `iot/presence/{partition}/{id}` (partition = FNV-1a of the id modulo the count it announces,
// retained, on `$iot/config/uplink_partitions`). Each partition is consumed through its own
// persistent MQTT session, client id `{group}-p{partition}`, held by one replica at a time under
// a Redis lease: so a device's messages stay in order across replicas (one consumer per
// partition), a partition whose replica died is taken over with everything the broker queued
// for its session meanwhile, and the replicas split the partitions evenly
// (ceil(partitions / live replicas) each). A replica hands a partition over only after
// everything it took from it has been handed on and acknowledged to the broker (drained), so
// the next holder neither overtakes it nor gets it again. broker/README.md, Uplink, has the
// whole picture.

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "iot/common/mqtt_consumer.h"
#include "iot/common/redis.h"
#include "iot/device_gateway/ports.h"

namespace iot::device_gateway {

/// How many of `partitions` one of `replicas` live replicas should hold.
size_t FairShare(size_t partitions, size_t replicas);

/// The count announced on `$iot/config/uplink_partitions`; nullopt when malformed.
std::optional<uint32_t> ParsePartitionCount(std::string_view payload);

/// The Redis side of partition ownership, for one replica. Keys (prefix `gw:{group}:`):
/// `members` (sorted set: replica id -> lease expiry, unix ms) and `part:{n}` (the holder's
/// replica id, with the lease as its TTL).
class PartitionLeases {
 public:
  PartitionLeases(std::shared_ptr<common::RedisClient> redis, const std::string& group,
                  std::string replica_id, std::chrono::milliseconds lease);

  /// Registers this replica for one more lease period and returns how many replicas are live
  /// (itself included).
  absl::StatusOr<size_t> Heartbeat();
  /// True when this replica now holds `partition` (it was free).
  absl::StatusOr<bool> TryAcquire(uint32_t partition);
  /// Extends the lease; false when this replica no longer holds it.
  absl::StatusOr<bool> Renew(uint32_t partition);
  /// Frees `partition` if this replica holds it.
  absl::Status Release(uint32_t partition);
  /// Leaves the member set (graceful shutdown).
  absl::Status Leave();

  [[nodiscard]] const std::string& replica_id() const { return replica_id_; }
  [[nodiscard]] std::chrono::milliseconds lease() const { return lease_; }

 private:
  std::string PartitionKey(uint32_t partition) const;

  const std::shared_ptr<common::RedisClient> redis_;
  const std::string prefix_;
  const std::string replica_id_;
  const std::chrono::milliseconds lease_;
};

/// What the owner asks of the MQTT side (and of the pipeline) for each partition. Both return
/// at once (they run on the ownership thread, which must keep renewing the leases).
struct PartitionHooks {
  /// Start consuming `partition` (connect its session).
  std::function<void(uint32_t partition)> start;
  /// Stop consuming `partition`. Returns a predicate that turns true once nothing more from it
  /// can be taken and everything taken from it has been handed on to the owners and
  /// acknowledged to the broker (or the wait for that timed out).
  std::function<std::function<bool()>(uint32_t partition)> stop;
};

struct PartitionMetrics {
  explicit PartitionMetrics(prometheus::Registry& registry);
  /// iot_gateway_partitions_owned: partitions this replica consumes.
  prometheus::Gauge& owned;
  /// iot_gateway_partitions_total: the count the broker announced.
  prometheus::Gauge& total;
  /// iot_gateway_partition_changes_total{event}: acquired, released (handed over after a
  /// drain), lost (the lease was gone: Redis unreachable past the lease, or taken over).
  prometheus::Family<prometheus::Counter>& changes;
};

/// Takes, keeps, balances and hands over partitions for this replica. Thread-safe.
class PartitionOwner : public PartitionCountSink {
 public:
  struct Options {
    std::chrono::milliseconds tick{500};
    /// A partition being handed over is released after this even if not drained (logged: the
    /// next holder may then overtake what is still queued here).
    std::chrono::milliseconds drain_timeout{std::chrono::seconds{60}};
  };

  PartitionOwner(Options options, std::unique_ptr<PartitionLeases> leases, PartitionHooks hooks,
                 PartitionMetrics& metrics);
  /// Stop()s.
  ~PartitionOwner();
  PartitionOwner(const PartitionOwner&) = delete;
  PartitionOwner& operator=(const PartitionOwner&) = delete;

  void SetPartitionCount(uint32_t count) override;
  /// Starts the ownership thread (one tick at once, then every `tick`).
  void Start();
  /// Stops the thread and stop()s every partition held; the leases stay (see ReleaseAll). The
  /// caller then waits for the sessions to stop (PartitionSessions::StopAll). Idempotent.
  void Stop();
  /// After Stop() and once what was taken is handed on: frees every lease and leaves, so that
  /// other replicas take over at once instead of after the lease.
  void ReleaseAll();

  /// Partitions consumed now (not those being handed over).
  [[nodiscard]] std::vector<uint32_t> owned() const;
  /// The broker's count is known and the last round left this replica holding its share (or
  /// every other partition taken): part of the gateway's readiness.
  [[nodiscard]] bool settled() const { return settled_.load(); }

  /// One round (the thread calls it; tests may too): heartbeat, renew, hand over or take.
  void Tick();

 private:
  struct Held {
    bool draining = false;
    std::function<bool()> drained;
    std::chrono::steady_clock::time_point drain_started;
  };

  void HandOver(uint32_t partition, Held& held);
  void LoseAll(const char* why);
  /// Renews the lease of every partition held, dropping those another replica holds now. False
  /// when Redis failed.
  bool RenewHeld();
  /// Releases the partitions handed over that are drained or past the drain timeout.
  void ReleaseDrained(std::chrono::steady_clock::time_point now);
  /// Hands over or takes partitions for this replica's share of `count` among `replicas`.
  void Balance(uint32_t count, size_t replicas);
  void Run();

  const Options options_;
  const std::unique_ptr<PartitionLeases> leases_;
  const PartitionHooks hooks_;
  PartitionMetrics& metrics_;
  const uint32_t offset_;  ///< Where this replica starts looking for free partitions.
  std::atomic<uint32_t> count_{0};
  std::atomic<bool> settled_{false};

  mutable std::mutex mu_;  ///< Guards held_ and last_renewed_; Tick() runs under it.
  std::map<uint32_t, Held> held_;
  std::chrono::steady_clock::time_point last_renewed_;
  bool redis_failing_ = false;

  std::mutex run_mu_;
  std::condition_variable run_changed_;
  bool stopping_ = false;
  bool stopped_ = false;  ///< Stop() ran.
  std::thread thread_;
};

/// The MQTT sessions of the partitions this replica holds: client id `{group}-p{partition}`,
/// persistent (clean start off), subscribed to `iot/up/{partition}/#` and
/// `iot/presence/{partition}/+` at QoS 1, each an MqttConsumer that acknowledges a message only
/// once the handler's pipeline says it is handed on. Thread-safe.
class PartitionSessions {
 public:
  /// The message handler of one partition's consumer (runs on its network thread and must not
  /// block); acknowledgements go to `consumer`.
  using HandlerFactory = std::function<common::MqttConsumer::Handler(
      uint32_t partition, std::weak_ptr<common::MqttConsumer> consumer)>;

  /// `base`: URL, credentials, session expiry, keepalive, Receive Maximum; client id and
  /// subscriptions are set here. A stopping session waits at most `drain_timeout` for what it
  /// delivered to be acknowledged.
  PartitionSessions(common::MqttConsumerOptions base, std::string group, HandlerFactory handlers,
                    std::chrono::milliseconds drain_timeout);
  /// StopAll()s.
  ~PartitionSessions();
  PartitionSessions(const PartitionSessions&) = delete;
  PartitionSessions& operator=(const PartitionSessions&) = delete;

  /// For PartitionOwner.
  PartitionHooks hooks();
  /// Stops every session now, drained or not (what is unacknowledged the broker delivers
  /// again), and waits until they are closed.
  void StopAll();

  /// Every session is connected with its subscriptions acknowledged.
  [[nodiscard]] bool AllSubscribed() const;

 private:
  struct Stopping {
    std::thread thread;
  };

  void Start(uint32_t partition);
  std::function<bool()> Stop(uint32_t partition);
  /// Joins a finished or pending stop of `partition` (before its session starts again).
  void JoinStopping(uint32_t partition);

  const common::MqttConsumerOptions base_;
  const std::string group_;
  const HandlerFactory handlers_;
  const std::chrono::milliseconds drain_timeout_;
  std::atomic<bool> abandon_{false};  ///< StopAll(): stopping sessions stop waiting

  mutable std::mutex mu_;
  std::map<uint32_t, std::shared_ptr<common::MqttConsumer>> sessions_;
  std::map<uint32_t, Stopping> stopping_;
};

}  // namespace iot::device_gateway
