#pragma once

// A background thread subscribed to the thing-model change channel `tm:changes`.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "iot/common/url.h"

struct redisContext;

namespace iot::broker {

class ChangeWatcher {
 public:
  struct Callbacks {
    /// A `{"kind":"device",...}` change of `device_id`.
    std::function<void(const std::string& device_id)> on_device_change;
    /// The subscription is live (SUBSCRIBE acknowledged) or lost (connection closed, or no
    /// answer to the heartbeat PING for kHeartbeatTimeout).
    std::function<void(bool live)> on_subscription;
    /// Time to re-read everything cached: after every (re)subscribe (`subscribed` true: messages
    /// may have been missed) and every `resync_interval`.
    std::function<void(bool subscribed)> on_resync;
    /// Warnings and errors; `error` false for informational lines.
    std::function<void(bool error, const std::string& message)> log;
  };

  /// `redis` as parsed from the plugin's redis_url; `timeout` bounds connect and handshake.
  ChangeWatcher(common::Url redis, std::chrono::milliseconds timeout,
                std::chrono::milliseconds resync_interval, Callbacks callbacks);
  ~ChangeWatcher();
  ChangeWatcher(const ChangeWatcher&) = delete;
  ChangeWatcher& operator=(const ChangeWatcher&) = delete;

  void Start();
  /// Joins the thread (within ~250 ms).
  void Stop();

  static constexpr const char* kChannel = "tm:changes";
  /// A silent connection (no FIN, e.g. a partition) is noticed within kHeartbeatTimeout: the
  /// subscription PINGs every kHeartbeat.
  static constexpr std::chrono::milliseconds kHeartbeat{1000};
  static constexpr std::chrono::milliseconds kHeartbeatTimeout{3000};

 private:
  void Run();
  /// One connection: subscribe, then read until an error or Stop(). True if it subscribed.
  /// One subscribed connection, until it fails or Stop(); false when it could not subscribe.
  bool Session();
  /// Handles the messages until the connection fails, goes silent or Stop().
  void Listen(redisContext* context);
  /// Handles the replies read; true when there was any.
  bool HandleReplies(redisContext* context);
  /// Waits `delay` or until Stop(); false when stopping.
  bool Sleep(std::chrono::milliseconds delay);
  void Handle(const std::string& payload);

  const common::Url redis_;
  const std::chrono::milliseconds timeout_;
  const std::chrono::milliseconds resync_interval_;
  const Callbacks callbacks_;

  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace iot::broker
