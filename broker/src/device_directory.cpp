#include "device_directory.h"

#include <charconv>

namespace iot::broker {
namespace {

constexpr std::string_view kDeviceKeyPrefix = "tm:dev:";
constexpr std::string_view kReadyKey = "tm:projection:ready";

std::string DeviceKey(const std::string& device_id) {
  std::string key(kDeviceKeyPrefix);
  key.append(device_id);
  return key;
}

}  // namespace

DeviceDirectory::DeviceDirectory(std::unique_ptr<common::RedisClient> redis, Options options,
                                 Clock clock)
    : redis_(std::move(redis)),
      options_(options),
      clock_(clock ? std::move(clock) : Clock([] { return std::chrono::steady_clock::now(); })) {}

std::optional<DeviceRecord> DeviceDirectory::ParseRecord(const common::RedisReply& reply) {
  if (reply.type != common::RedisReply::Type::kArray || reply.elements.empty()) {
    return std::nullopt;
  }
  DeviceRecord record;
  for (size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
    const std::string& field = reply.elements[i].str;
    const std::string& value = reply.elements[i + 1].str;
    if (field == "tenant_id") {
      record.tenant_id = value;
    } else if (field == "product_id") {
      record.product_id = value;
    } else if (field == "node_id") {
      record.node_id = value;
    } else if (field == "frozen") {
      record.frozen = value == "1" || value == "true";
    } else if (field == "secret") {
      record.sealed_secret = value;
    } else if (field == "fingerprint") {
      record.fingerprint = value;
    } else if (field == "version") {
      std::from_chars(value.data(), value.data() + value.size(), record.version);
    }
  }
  return record;
}

Lookup DeviceDirectory::Find(const std::string& device_id) {
  const auto now = clock_();
  std::optional<DeviceRecord> cached;
  bool have_cached = false;
  std::chrono::steady_clock::time_point fetched;
  {
    std::lock_guard lock(mutex_);
    if (const auto it = entries_.find(device_id); it != entries_.end()) {
      if (now - it->second.fetched < options_.ttl) {
        const auto& record = it->second.record;
        return Lookup{.status = record ? LookupStatus::kFound : LookupStatus::kNotFound,
                      .record = record,
                      .stale = false};
      }
      cached = it->second.record;
      fetched = it->second.fetched;
      have_cached = true;
    }
  }

  auto reply = redis_->Command({"HGETALL", DeviceKey(device_id)});
  if (reply.ok() && !reply->is_error()) {
    auto record = ParseRecord(*reply);
    Store(device_id, record, clock_());
    return Lookup{.status = record ? LookupStatus::kFound : LookupStatus::kNotFound,
                  .record = std::move(record),
                  .stale = false};
  }
  // Fail closed, except for a device we knew recently: an outage must not log out the fleet.
  if (have_cached && cached && now - fetched < options_.max_stale) {
    return Lookup{.status = LookupStatus::kFound, .record = std::move(cached), .stale = true};
  }
  return Lookup{.status = LookupStatus::kUnavailable, .record = std::nullopt, .stale = false};
}

std::optional<RefreshResult> DeviceDirectory::Refresh(const std::vector<std::string>& device_ids) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(device_ids.size() + 1);
  commands.push_back({"EXISTS", std::string(kReadyKey)});
  for (const auto& id : device_ids) {
    commands.push_back({"HGETALL", DeviceKey(id)});
  }
  auto replies = redis_->Pipeline(commands);
  if (!replies.ok() || replies->size() != commands.size()) {
    return std::nullopt;
  }
  for (const auto& reply : *replies) {
    if (reply.is_error()) {
      return std::nullopt;
    }
  }
  RefreshResult result;
  result.projection_ready = (*replies)[0].integer == 1;
  const auto now = clock_();
  for (size_t i = 0; i < device_ids.size(); ++i) {
    auto record = ParseRecord((*replies)[i + 1]);
    // A missing key while the projection is rebuilt says nothing: keep what we had.
    if (record || result.projection_ready) {
      Store(device_ids[i], record, now);
    }
    result.devices.push_back(RefreshedDevice{.device_id = device_ids[i], .record = record});
  }
  return result;
}

void DeviceDirectory::Invalidate(const std::string& device_id) {
  std::lock_guard lock(mutex_);
  if (const auto it = entries_.find(device_id); it != entries_.end()) {
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }
}

size_t DeviceDirectory::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void DeviceDirectory::Store(const std::string& device_id, std::optional<DeviceRecord> record,
                            std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (const auto it = entries_.find(device_id); it != entries_.end()) {
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }
  while (!lru_.empty() && entries_.size() >= options_.capacity) {
    entries_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(device_id);
  entries_.emplace(device_id,
                   Entry{.record = std::move(record), .fetched = now, .lru = lru_.begin()});
}

}  // namespace iot::broker
