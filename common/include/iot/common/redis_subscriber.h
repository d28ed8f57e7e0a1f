#pragma once

// Redis pub/sub for change feeds and cross-replica signals (e.g. thing-model's `tm:changes`).

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "iot/common/redis.h"

namespace iot::common {

/// Subscribes to fixed channels on a connection of its own (outside RedisClient's pool) and
/// calls `on_message(channel, message)` for each message, on its own thread, in order. When the
/// connection is lost it reconnects with backoff (100 ms → 10 s) and subscribes again; Redis
/// pub/sub does not keep messages for absent subscribers, so `on_resync` runs after every
/// successful (re)subscription (also the first): the place to drop caches fed by the channel.
/// Handlers must not block for long; they may not destroy the subscriber.
class RedisSubscriber {
 public:
  using Handler = std::function<void(const std::string& channel, const std::string& message)>;
  using ResyncHandler = std::function<void()>;

  /// Validates the URL and starts the thread; never fails on Redis being down.
  static absl::StatusOr<std::unique_ptr<RedisSubscriber>> Start(std::string url,
                                                                std::vector<std::string> channels,
                                                                Handler on_message,
                                                                ResyncHandler on_resync = {});
  ~RedisSubscriber();  ///< Stops the thread (within ~200 ms).
  RedisSubscriber(const RedisSubscriber&) = delete;
  RedisSubscriber& operator=(const RedisSubscriber&) = delete;

  /// True while subscribed to every channel, from when that subscription's `on_resync` returned.
  [[nodiscard]] bool subscribed() const { return subscribed_.load(); }
  /// Waits until subscribed (true) or the timeout passed (false).
  bool WaitSubscribed(std::chrono::milliseconds timeout) const;

 private:
  RedisSubscriber(std::unique_ptr<RedisClient> client, std::vector<std::string> channels,
                  Handler on_message, ResyncHandler on_resync);
  void Run();
  /// One connection's life: connect, subscribe, dispatch until an error or stop.
  absl::Status RunOnce();

  std::unique_ptr<RedisClient> client_;
  const std::vector<std::string> channels_;
  Handler on_message_;
  ResyncHandler on_resync_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> subscribed_{false};
  std::thread thread_;
};

}  // namespace iot::common
