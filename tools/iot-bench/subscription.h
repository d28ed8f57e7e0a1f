#pragma once

// The bench's application subscription: a consumer group of the run, a rule that puts the
// product's property reports into it, and a consumer that reads it over Subscriptions/Subscribe
// and acks what it got — as an application would, including after a broken stream: it opens a
// new one with the same consumer name (backoff 200 ms doubling to 5 s), gets its unacked
// messages again (marked redelivered) and goes on. Only an error that a new stream cannot
// change (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNIMPLEMENTED) ends it.

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "api.h"

namespace iotbench {

struct BenchContext;

/// One message of the subscription.
struct SubscriptionMessage {
  std::string device_id;
  std::string delivery_id;  ///< stable across redeliveries of one delivery
  bool redelivered = false;
  nlohmann::json payload;  ///< payload_json parsed (discarded when not JSON)
};

class Subscription {
 public:
  /// Called on the reader thread for every message, before it is acked.
  using Handler = std::function<void(const SubscriptionMessage&)>;

  Subscription(const BenchContext& context, Handler handler);
  /// Stop()s.
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  /// Creates the group and the rule and starts reading. Errors name the call that failed.
  absl::Status Start();
  /// Ends the stream and deletes the rule and the group. Idempotent.
  void Stop();

  /// Why the subscription ended for good (OK while it runs, and after Stop()).
  [[nodiscard]] absl::Status ended() const;
  /// Streams that broke and were opened again.
  [[nodiscard]] std::uint64_t resubscribed() const { return resubscribed_.load(); }
  /// The last error that broke a stream (OK when none did).
  [[nodiscard]] absl::Status last_stream_error() const;

 private:
  void Run();
  /// Opens a stream and sends `start`; the reason when it could not.
  absl::Status Open();
  /// Acks what was received, every 100 ms (and on the reader thread every 50 messages).
  void Acker();
  void FlushAcks();
  /// Sleeps up to `delay` unless Stop() is called; false when stopping.
  bool Pause(std::chrono::milliseconds delay);

  const BenchContext& context_;
  DynamicClient client_;
  Handler handler_;
  std::string group_;
  bool group_created_ = false;
  std::string rule_id_;

  mutable std::mutex mutex_;
  std::condition_variable stop_cv_;
  std::shared_ptr<DynamicClient::Stream> stream_;
  std::vector<std::string> acks_;
  absl::Status ended_;
  absl::Status last_stream_error_;
  bool stopping_ = false;
  std::atomic<std::uint64_t> resubscribed_{0};
  std::thread reader_;
  std::thread acker_;
};

}  // namespace iotbench
