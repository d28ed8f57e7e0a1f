#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "iot/shadow/shadow_service.h"

namespace iot::shadow {

/// The background loop of a replica: rebuilds Redis from PostgreSQL when Redis lost its data,
/// and writes dirty shadows to PostgreSQL in coalesced batches every `interval`, retrying with
/// backoff while PostgreSQL (or Redis) is down.
class WriteBehind {
 public:
  WriteBehind(std::shared_ptr<ShadowService> service, std::chrono::milliseconds interval);
  ~WriteBehind();
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  void Start();
  /// Flushes what is dirty once more (best effort), then stops the loop.
  void Stop();

 private:
  void Loop();
  /// One round: rebuild check, then batches until nothing is due. False on an error.
  bool Round();

  std::shared_ptr<ShadowService> service_;
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace iot::shadow
