#include <fmt/format.h>

#include <map>
#include <mutex>

#include "iot/common/status.h"
#include "iot/rule_forwarding/subscriptions.h"

namespace iot::rule_forwarding {
namespace {

constexpr auto kCacheTtl = std::chrono::seconds(1);

absl::StatusOr<std::string> GroupOf(const nlohmann::json* config) {
  if (config == nullptr || !config->is_object()) {
    return common::InvalidField("config", "must be an object {\"group\": \"name\"}");
  }
  for (const auto& [key, value] : config->items()) {
    if (key != "group") {
      return common::InvalidField("config." + key, "unknown setting (consumer_group takes group)");
    }
  }
  const auto it = config->find("group");
  if (it == config->end() || !it->is_string()) {
    return common::InvalidField("config.group", "required: the consumer group's name");
  }
  const std::string group = it->get<std::string>();
  if (absl::Status s = CheckName("config.group", group); !s.ok()) {
    return s;
  }
  return group;
}

class ConsumerGroupDestination final : public Destination {
 public:
  ConsumerGroupDestination(std::shared_ptr<GroupStore> groups,
                           std::shared_ptr<GroupStreams> streams)
      : groups_(std::move(groups)), streams_(std::move(streams)) {}

  [[nodiscard]] std::string_view type() const override { return "consumer_group"; }

  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& config) const override {
    return GroupOf(&config).status();
  }

  absl::Status Deliver(std::span<const Delivery> batch) override {
    // Consecutive deliveries of one (tenant, group) go in one pipeline, in order.
    size_t begin = 0;
    while (begin < batch.size()) {
      auto name = GroupOf(batch[begin].action_config);
      if (!name.ok()) {
        return name.status();
      }
      size_t end = begin + 1;
      while (end < batch.size() && batch[end].tenant_id == batch[begin].tenant_id &&
             GroupOf(batch[end].action_config).value_or("") == *name) {
        ++end;
      }
      auto group = Lookup(batch[begin].tenant_id, *name);
      if (!group.ok()) {
        return group.status();
      }
      if (absl::Status s = streams_->Append(*group, batch.subspan(begin, end - begin)); !s.ok()) {
        return s;
      }
      begin = end;
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<ConsumerGroupSettings> Lookup(const std::string& tenant_id,
                                               const std::string& name) {
    const auto now = std::chrono::steady_clock::now();
    const auto key = std::make_pair(tenant_id, name);
    {
      std::lock_guard lock(mu_);
      if (auto it = cache_.find(key); it != cache_.end() && it->second.second > now) {
        return it->second.first;
      }
    }
    auto group = groups_->Get(tenant_id, name);
    if (absl::IsNotFound(group.status())) {
      return absl::FailedPreconditionError(
          fmt::format("consumer group '{}' does not exist (tenant {})", name, tenant_id));
    }
    if (!group.ok()) {
      return absl::UnavailableError(std::string(group.status().message()));
    }
    std::lock_guard lock(mu_);
    if (cache_.size() > 10'000) {
      cache_.clear();
    }
    cache_[key] = {*group, now + kCacheTtl};
    return group;
  }

  std::shared_ptr<GroupStore> groups_;
  std::shared_ptr<GroupStreams> streams_;
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>,
           std::pair<ConsumerGroupSettings, std::chrono::steady_clock::time_point>>
      cache_;
};

}  // namespace

std::shared_ptr<Destination> MakeConsumerGroupDestination(std::shared_ptr<GroupStore> groups,
                                                          std::shared_ptr<GroupStreams> streams) {
  return std::make_shared<ConsumerGroupDestination>(std::move(groups), std::move(streams));
}

}  // namespace iot::rule_forwarding
