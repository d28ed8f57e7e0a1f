#pragma once

// An in-memory Outbox for the unit tests: ids from 1, what is stored, and the action types added.

#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "iot/rule_forwarding/dispatcher.h"

namespace iot::rule_forwarding::fakes {

class FakeOutbox final : public Outbox {
 public:
  absl::Status Add(std::vector<DispatchItem>& items) override {
    std::lock_guard lock(mu_);
    for (DispatchItem& item : items) {
      item.outbox_id = ++last_;
      stored_.insert(item.outbox_id);
      types_.push_back(item.action_type);
    }
    return absl::OkStatus();
  }
  absl::Status Remove(const std::vector<int64_t>& ids) override {
    std::lock_guard lock(mu_);
    for (int64_t id : ids) {
      stored_.erase(id);
    }
    return absl::OkStatus();
  }
  std::set<int64_t> stored() {
    std::lock_guard lock(mu_);
    return stored_;
  }
  /// The action type of every item ever added, in order.
  std::vector<std::string> types() {
    std::lock_guard lock(mu_);
    return types_;
  }

 private:
  std::mutex mu_;
  int64_t last_ = 0;
  std::set<int64_t> stored_;
  std::vector<std::string> types_;
};

}  // namespace iot::rule_forwarding::fakes
