#pragma once

// Per-device ordered, batched, retried hand-over of uplink to its owners, and the moment a
// message may be acknowledged to the broker.
//
// Messages are sharded by device id into queues with one sender thread per shard, so a
// device's messages reach every owner in the order the broker delivered them. A sender takes
// up to `max_batch` queued messages, resolves each device (DeviceCache) and turns them into
// per-owner batches (UplinkProcessor). Each shard has one lane per owner (shadow,
// command-dispatch, rule-forwarding): a thread with a bounded queue of batches that calls its
// owner with one batch at a time, in order — the batches that queued up while a call was in
// flight go together in the next call (group commit). So the owners of a shard work in
// parallel and the sender resolves the next batch meanwhile, while each owner still sees a
// device's messages in order: one call in flight per owner and shard, and nothing later of the
// shard overtakes a call.
//
// A batch is finished once every owner answered OK for its part (records an owner lists in
// IngestAck.rejected are counted, logged and forwarded as validation_failed, never retried) or
// its refused records went to the dead letters. A message is acknowledged (its Ack called:
// the MQTT PUBACK) only when its batch and every earlier batch of the shard are finished: what
// the gateway acknowledged, its owners have. Until then the broker keeps it, and delivers it
// again to the next holder of the partition if this process dies.
//
// Errors: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL and the
// rest are retried with exponential backoff for as long as it takes. INVALID_ARGUMENT,
// FAILED_PRECONDITION and OUT_OF_RANGE (the owner refuses the request itself) are tried
// `max_attempts` times; then the batch is split in halves, each tried again, down to single
// records, so that one bad record cannot take the others with it; a single record still
// refused goes to the dead letters (DeadLetterStore) and the shard moves on.
//
// Submit() never blocks: the broker's Receive Maximum bounds what is in flight (at most that
// many unacknowledged messages per partition session), not the queues.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "iot/device_gateway/device_cache.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/ports.h"
#include "iot/device_gateway/presence.h"
#include "iot/device_gateway/processor.h"
#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {

using WorkItem = std::variant<UplinkMessage, RejectedUplink, PresenceEvent>;

struct PipelineOptions {
  size_t shards = 16;
  size_t max_batch = 100;
  /// Batches an owner lane of a shard queues while its call is in flight; they go together in
  /// the next call (so a call carries at most owner_batches × max_batch messages).
  size_t owner_batches = 4;
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{5000};
  /// Tries of a request an owner refuses (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE)
  /// before it is split, or its one record goes to the dead letters.
  int max_attempts = 3;
  /// For messages that came without the broker plugin's id.
  std::string message_id_prefix = "gw";
  /// What one device message may carry (UplinkProcessor checks the content).
  UplinkLimits limits{};
};

class UplinkPipeline {
 public:
  /// Called once the message is finished: acknowledge it to the broker.
  using Ack = std::function<void()>;

  UplinkPipeline(PipelineOptions options, std::shared_ptr<DeviceCache> devices,
                 std::shared_ptr<Downstream> downstream,
                 std::shared_ptr<DeviceStatusSink> device_status,
                 std::shared_ptr<DevicePublisher> publisher,
                 std::shared_ptr<DeadLetterStore> dead_letters, GatewayMetrics& metrics);
  ~UplinkPipeline();
  UplinkPipeline(const UplinkPipeline&) = delete;
  UplinkPipeline& operator=(const UplinkPipeline&) = delete;

  /// Queues `item` on its device's shard and never blocks; `ack` runs once it is finished
  /// (on a pipeline thread). False once stopped: `ack` never runs.
  bool Submit(WorkItem item, Ack ack = {});

  /// The senders hand on what is queued until `deadline`, then stop; what is left is not
  /// acknowledged (iot_gateway_uplink_unacknowledged_total, logged): the broker delivers it
  /// again. Idempotent.
  void Stop(std::chrono::steady_clock::time_point deadline);

  /// Messages submitted and not yet finished.
  [[nodiscard]] size_t pending() const { return pending_.load(); }

 private:
  /// The owners a shard's batches are handed to, one lane each.
  enum class Owner { kShadow, kCommands, kRules };
  static constexpr size_t kOwners = 3;

  struct Queued {
    WorkItem item;
    Ack ack;
  };

  /// What one sender's batch produced, shared by the lanes until each has handed its part on.
  struct Shard;
  struct Batch {
    Outputs out;
    Shard* shard = nullptr;
    bool complete = false;  ///< Under shard->finish_mu.
    std::vector<Ack> acks;  ///< One per message taken.
    std::atomic<size_t> remaining{kOwners};
    std::atomic<bool> unfinished{false};  ///< A lane gave up (stopped): acknowledge nothing.
  };

  struct Lane {
    Owner owner = Owner::kShadow;
    std::mutex mu;
    std::condition_variable changed;
    std::deque<std::shared_ptr<Batch>> queue;
    bool closed = false;
    std::thread thread;
  };

  struct Shard {
    std::mutex mu;
    std::condition_variable changed;
    std::deque<Queued> queue;
    std::thread sender;
    std::array<std::unique_ptr<Lane>, kOwners> lanes;
    std::mutex finish_mu;
    /// Batches taken from the queue, oldest first, until they and all before are finished.
    std::deque<std::shared_ptr<Batch>> unfinished;
  };

  static bool HasWork(Owner owner, const Outputs& out);
  static void MergeInto(Owner owner, const Outputs& from, Outputs& to);
  static std::string_view OwnerName(Owner owner);

  void Run(Shard& shard);
  void RunLane(Lane& lane);
  bool HandOff(Lane& lane, const std::shared_ptr<Batch>& batch);
  /// One lane is done with `batch` (`ok`: its part was handed on); the last one finishes it,
  /// and acknowledges what became finished in order.
  void Done(Batch& batch, bool ok);

  /// Calls `call` until OK, a non-retryable refusal `max_attempts` times (returned), or the
  /// pipeline is stopped for good (CANCELLED).
  absl::Status Attempt(Target target, const std::function<absl::Status()>& call);
  /// Hands `request` to its owner through `call`: retried, split and dead-lettered as the
  /// header says; the records the owner refused are appended to `rejected`. False when the
  /// pipeline was stopped for good meanwhile.
  template <typename Request>
  bool DeliverBatch(Target target, const Request& request,
                    const std::function<OwnerAnswer(const Request&)>& call,
                    std::vector<device_gateway::v1::RejectedRecord>& rejected);
  /// Stores the one record of `request` as a dead letter (retried until stored or stopped).
  template <typename Request>
  bool DeadLetterOf(Target target, const Request& request, const absl::Status& refusal,
                    int attempts);
  /// Counts and logs what `owner` refused of `sent`, and forwards it as validation_failed.
  bool Refused(Owner owner, const Outputs& sent,
               const std::vector<device_gateway::v1::RejectedRecord>& rejected);

  /// Hands `owner`'s part of `out` on (in the order the batches were made).
  bool Flush(Owner owner, const Outputs& out);
  bool FlushShadow(const Outputs& out, std::vector<device_gateway::v1::RejectedRecord>& rejected);
  bool FlushCommands(const Outputs& out, std::vector<device_gateway::v1::RejectedRecord>& rejected);
  /// Publishes replies to devices (best effort: counted, a failure logged).
  void PublishReplies(const std::vector<DeviceReply>& replies, int qos);
  /// The device of an item; nullptr when it does not exist (the item is then dropped).
  /// Retries transient failures; nullopt when stopped meanwhile.
  std::optional<std::shared_ptr<const DeviceInfo>> Resolve(const WorkItem& item);
  /// thing-model's presence record first; false when stopped; `known` false: no such device.
  bool RecordPresence(const DeviceInfo& device, const PresenceEvent& event, bool& known);
  bool Stopped();
  bool Wait(std::chrono::milliseconds delay);

  PipelineOptions options_;
  std::shared_ptr<DeviceCache> devices_;
  std::shared_ptr<Downstream> downstream_;
  std::shared_ptr<DeviceStatusSink> device_status_;
  std::shared_ptr<DevicePublisher> publisher_;
  std::shared_ptr<DeadLetterStore> dead_letters_;
  GatewayMetrics& metrics_;
  MessageIds ids_;
  UplinkProcessor processor_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<size_t> pending_{0};

  std::mutex stop_mu_;
  std::condition_variable stop_changed_;
  std::chrono::steady_clock::time_point drain_deadline_ =
      std::chrono::steady_clock::time_point::max();
  bool stopping_ = false;
};

/// Whether the pipeline retries `code` for as long as it takes (else: max_attempts, then
/// split and dead letters).
bool Retryable(absl::StatusCode code);

}  // namespace iot::device_gateway
