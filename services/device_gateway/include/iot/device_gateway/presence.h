#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"

namespace iot::device_gateway {

/// A connect or disconnect of a device, as the broker plugin publishes it on
/// `$iot/presence/{device_id}` (broker/README.md).
struct PresenceEvent {
  std::string device_id;
  bool online = false;
  std::string time;    ///< RFC 3339 with milliseconds
  std::string reason;  ///< connect, connection_closed, replaced, frozen, deleted
};

/// INVALID_ARGUMENT naming what is wrong for a topic or payload that is not a presence event.
absl::StatusOr<PresenceEvent> ParsePresence(std::string_view topic, std::string_view payload);

/// Port: where presence goes (thing-model's device status).
class DeviceStatusSink {
 public:
  virtual ~DeviceStatusSink() = default;
  /// NOT_FOUND / INVALID_ARGUMENT are final; anything else is retried.
  virtual absl::Status ReportPresence(const PresenceEvent& event) = 0;
};

/// thing-model's InternalThingModel.ReportDevicePresence with the platform service credential.
std::shared_ptr<DeviceStatusSink> MakeThingModelStatusSink(const std::string& address,
                                                           const std::string& service_key);

/// Hands presence events to the sink on a worker thread, in arrival order, retrying
/// transient failures with backoff. The queue is bounded: Submit() blocks when it is full, so
/// a thing-model outage stops the gateway from reading MQTT instead of growing memory (the
/// broker keeps the events queued for the gateway's session).
class PresenceForwarder {
 public:
  PresenceForwarder(std::shared_ptr<DeviceStatusSink> sink, prometheus::Registry& registry,
                    size_t capacity = 10'000);
  ~PresenceForwarder();
  PresenceForwarder(const PresenceForwarder&) = delete;
  PresenceForwarder& operator=(const PresenceForwarder&) = delete;

  /// Blocks while the queue is full. False once stopped.
  bool Submit(PresenceEvent event);
  /// Counts and logs a payload that is not a presence event.
  void Reject(std::string_view topic, const absl::Status& why);
  /// Delivers what is queued (up to `drain` long: an event is acknowledged to the broker when
  /// it is queued, so dropping the queue would lose it), then stops. Events still queued at
  /// the deadline are counted as dropped and logged.
  void Stop(std::chrono::milliseconds drain = std::chrono::seconds(5));
  [[nodiscard]] size_t queued();

 private:
  void Run();

  std::shared_ptr<DeviceStatusSink> sink_;
  size_t capacity_;
  prometheus::Family<prometheus::Counter>& events_;
  prometheus::Family<prometheus::Counter>& dropped_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<PresenceEvent> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace iot::device_gateway
