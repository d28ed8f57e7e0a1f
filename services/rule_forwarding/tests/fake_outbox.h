#pragma once

// An in-memory Outbox for the unit tests: ids from 1, keyed by delivery id as PgOutbox is, what
// is stored, and the action types added.

#include <map>
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
      auto [it, added] = ids_.try_emplace(item.delivery.delivery_id, last_ + 1);
      if (added) {
        ++last_;
        types_.push_back(item.action_type);
      }
      item.outbox_id = it->second;
      stored_.insert(item.outbox_id);
      disowned_.erase(item.outbox_id);
    }
    return absl::OkStatus();
  }
  absl::Status Remove(const std::vector<int64_t>& ids) override {
    std::lock_guard lock(mu_);
    for (int64_t id : ids) {
      stored_.erase(id);
      disowned_.erase(id);
      std::erase_if(ids_, [&](const auto& entry) { return entry.second == id; });
    }
    return absl::OkStatus();
  }
  absl::Status Disown(const std::vector<int64_t>& ids) override {
    std::lock_guard lock(mu_);
    disowned_.insert(ids.begin(), ids.end());
    return absl::OkStatus();
  }
  std::set<int64_t> stored() {
    std::lock_guard lock(mu_);
    return stored_;
  }
  /// Stored rows up for takeover by any replica.
  std::set<int64_t> disowned() {
    std::lock_guard lock(mu_);
    return disowned_;
  }
  /// The action type of every delivery ever stored (a row taken over again is not repeated).
  std::vector<std::string> types() {
    std::lock_guard lock(mu_);
    return types_;
  }

 private:
  std::mutex mu_;
  int64_t last_ = 0;
  std::map<std::string, int64_t> ids_;
  std::set<int64_t> stored_;
  std::set<int64_t> disowned_;
  std::vector<std::string> types_;
};

}  // namespace iot::rule_forwarding::fakes
