#include "iot/common/rejections.h"

#include "iot/common/logging.h"

namespace iot::common {

bool LogThrottle::Allow() {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  if (now - window_ >= std::chrono::seconds(1)) {
    window_ = now;
    used_ = 0;
  }
  return used_++ < per_second_;
}

RejectionCounter::RejectionCounter(prometheus::Registry& registry, const std::string& metric,
                                   const std::string& help)
    : family_(prometheus::BuildCounter().Name(metric).Help(help).Register(registry)) {}

void RejectionCounter::Reject(RejectedRecord record, Rejected& out) {
  family_.Add({{"reason", record.reason}}).Increment();
  if (throttle_.Allow()) {
    LogWarn("record rejected", {{"device_id", record.device_id},
                                {"message_id", record.message_id},
                                {"reason", record.reason},
                                {"detail", record.detail}});
  }
  out.push_back(std::move(record));
}

}  // namespace iot::common
