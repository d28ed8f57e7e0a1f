#include "iot/shadow/write_behind.h"

#include "iot/common/backoff.h"
#include "iot/common/logging.h"

namespace iot::shadow {

WriteBehind::WriteBehind(std::shared_ptr<ShadowService> service, std::chrono::milliseconds interval)
    : service_(std::move(service)), interval_(interval) {}

WriteBehind::~WriteBehind() { Stop(); }

void WriteBehind::Start() {
  std::lock_guard lock(mu_);
  if (!thread_.joinable()) {
    thread_ = std::thread([this] { Loop(); });
  }
}

void WriteBehind::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !thread_.joinable()) {
      stopping_ = true;
      return;
    }
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  (void)Round();
}

bool WriteBehind::Round() {
  auto rebuilt = service_->RebuildIfFlushed();
  if (!rebuilt.ok()) {
    common::LogWarn("shadow rebuild from PostgreSQL failed; retrying",
                    {{"error", std::string(rebuilt.status().message())}});
    return false;
  }
  while (true) {
    auto flushed = service_->FlushOnce();
    if (!flushed.ok()) {
      common::LogWarn("shadow write-behind failed; retrying",
                      {{"error", std::string(flushed.status().message())}});
      return false;
    }
    if (*flushed == 0) {
      return true;
    }
    std::lock_guard lock(mu_);
    if (stopping_) {
      return true;
    }
  }
}

void WriteBehind::Loop() {
  common::Backoff backoff(interval_, std::chrono::seconds(5));
  std::chrono::milliseconds wait = interval_;
  while (true) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, wait, [this] { return stopping_; })) {
        return;
      }
    }
    if (Round()) {
      backoff.Reset();
      wait = interval_;
    } else {
      wait = backoff.Next();
    }
  }
}

}  // namespace iot::shadow
