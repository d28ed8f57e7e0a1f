#pragma once

// Per-device ordered, batched, retried hand-over of uplink to its owners.
//
// Messages are sharded by device id into bounded queues with one sender thread per shard, so a
// device's messages reach every owner in the order the broker delivered them. A sender takes
// up to `max_batch` queued messages, resolves each device (DeviceCache) and turns them into
// per-owner batches (UplinkProcessor). Each shard has one lane per owner (shadow,
// command-dispatch, rule-forwarding): a thread with a bounded queue of batches that calls its
// owner with one batch at a time, in order — the batches that queued up while a call was in
// flight go together in the next call (group commit). So the owners of a shard work in
// parallel and the sender resolves the next batch meanwhile, while each owner still sees a
// device's messages in order: one call in flight per owner and shard, and a call is retried,
// with exponential backoff, until the owner answers OK — UNAVAILABLE and UNIMPLEMENTED
// included, and nothing later of the shard overtakes it. Only INVALID_ARGUMENT (the owner
// refuses the batch for good) is counted, logged and skipped. A full lane blocks its sender, a
// full shard queue blocks Submit(), which blocks the MQTT handler: the gateway stops reading
// and the broker keeps the messages in its session queue. What a shard holds is bounded by
// queue_capacity + max_batch × (1 + 2 × owner_batches) messages.

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
#include "iot/device_gateway/downstream.h"
#include "iot/device_gateway/metrics.h"
#include "iot/device_gateway/presence.h"
#include "iot/device_gateway/processor.h"
#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {

using WorkItem = std::variant<UplinkMessage, RejectedUplink, PresenceEvent>;

struct PipelineOptions {
  size_t shards = 16;
  size_t queue_capacity = 256;  ///< per shard
  size_t max_batch = 100;
  /// Batches an owner lane of a shard queues while its call is in flight; they go together in
  /// the next call (so a call carries at most owner_batches × max_batch messages).
  size_t owner_batches = 4;
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{5000};
  std::string message_id_prefix = "gw";
};

class UplinkPipeline {
 public:
  UplinkPipeline(PipelineOptions options, std::shared_ptr<DeviceCache> devices,
                 std::shared_ptr<Downstream> downstream,
                 std::shared_ptr<DeviceStatusSink> device_status,
                 std::shared_ptr<DevicePublisher> publisher, GatewayMetrics& metrics);
  ~UplinkPipeline();
  UplinkPipeline(const UplinkPipeline&) = delete;
  UplinkPipeline& operator=(const UplinkPipeline&) = delete;

  /// Queues `item` on its device's shard; blocks while that shard is full. False (and the
  /// item is counted as lost) once stopped or past the shutdown deadline.
  bool Submit(WorkItem item);

  /// Shutdown step 1: Submit() keeps queueing while there is room but gives up at `deadline`
  /// (so that the MQTT connection can be closed while an owner is down).
  void BeginShutdown(std::chrono::steady_clock::time_point deadline);
  /// Shutdown step 2: the senders deliver what is queued until `deadline`, then stop; what is
  /// left is counted (iot_gateway_uplink_lost_total) and logged. Idempotent.
  void Stop(std::chrono::steady_clock::time_point deadline);

  [[nodiscard]] size_t queued();

  /// A predicate that turns true once every message submitted before this call has been
  /// handed on to its owners (or given up as lost), or once the pipeline is stopping: what an
  /// uplink partition hand-over waits for (partitions.h). Per shard, a count of the messages
  /// of its batches finished in order (a batch counts once it and every earlier one of the
  /// shard is finished) is a watermark.
  std::function<bool()> Barrier();

 private:
  /// The owners a shard's batches are handed to, one lane each.
  enum class Owner { kShadow, kCommands, kRules };
  static constexpr size_t kOwners = 3;

  /// What one sender's batch produced, shared by the lanes until each has handed its part on.
  struct Shard;
  struct Batch {
    Outputs out;
    Shard* shard = nullptr;  ///< Whose `finished` counts it (Barrier).
    bool complete = false;   ///< Under shard->finish_mu.
    size_t messages = 0;
    std::atomic<size_t> remaining{kOwners};
    std::atomic<bool> lost{false};
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
    std::deque<WorkItem> queue;
    std::thread sender;
    std::array<std::unique_ptr<Lane>, kOwners> lanes;
    uint64_t submitted = 0;  ///< Under mu.
    std::mutex finish_mu;
    /// Batches taken from the queue, oldest first, until they and all before are finished.
    std::deque<std::shared_ptr<Batch>> unfinished;
    std::atomic<uint64_t> finished{0};  ///< Messages handed on or lost, in submit order.
  };

  /// Whether `out` holds anything for `owner`.
  static bool HasWork(Owner owner, const Outputs& out);
  /// Appends `owner`'s part of `from` to `to`.
  static void MergeInto(Owner owner, const Outputs& from, Outputs& to);

  void Run(Shard& shard);
  void RunLane(Lane& lane);
  /// Queues `batch` on `lane`, waiting for room; false (the batch is lost to this owner) when
  /// the pipeline is stopped for good meanwhile.
  bool HandOff(Lane& lane, const std::shared_ptr<Batch>& batch);
  /// One lane is done with `batch` (`ok`: its part was handed on); the last one counts it.
  void Done(Batch& batch, bool ok);
  /// Calls `call` until it returns OK or a final error, or the pipeline is stopped for good.
  /// False when it gave up because of the stop.
  template <typename Call>
  bool Deliver(Target target, Call&& call);
  /// Hands `owner`'s part of `out` on (in the order the batches were made).
  bool Flush(Owner owner, const Outputs& out);
  bool FlushShadow(const Outputs& out);
  bool FlushCommands(const Outputs& out);
  /// The device of an item; nullptr when it does not exist (the item is then dropped).
  /// Retries transient failures; nullopt when stopped meanwhile.
  std::optional<std::shared_ptr<const DeviceInfo>> Resolve(const WorkItem& item);
  bool Stopped();
  bool Wait(std::chrono::milliseconds delay);

  PipelineOptions options_;
  std::shared_ptr<DeviceCache> devices_;
  std::shared_ptr<Downstream> downstream_;
  std::shared_ptr<DeviceStatusSink> device_status_;
  std::shared_ptr<DevicePublisher> publisher_;
  GatewayMetrics& metrics_;
  MessageIds ids_;
  UplinkProcessor processor_;
  std::vector<std::unique_ptr<Shard>> shards_;

  std::mutex stop_mu_;
  std::condition_variable stop_changed_;
  bool submit_closed_ = false;
  std::chrono::steady_clock::time_point submit_deadline_ =
      std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point drain_deadline_ =
      std::chrono::steady_clock::time_point::max();
  bool stopping_ = false;
};

}  // namespace iot::device_gateway
