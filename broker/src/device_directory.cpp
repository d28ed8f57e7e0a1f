#include "device_directory.h"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <unordered_set>

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

DeviceDirectory::DeviceDirectory(std::unique_ptr<common::RedisClient> redis,
                                 std::unique_ptr<common::RedisClient> background, Options options,
                                 Clock clock)
    : redis_(std::move(redis)),
      background_owned_(std::move(background)),
      background_(background_owned_ ? *background_owned_ : *redis_),
      options_(std::move(options)),
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
    } else if (field == "dialect") {
      record.dialect = value;
    } else if (field == "version") {
      std::from_chars(value.data(), value.data() + value.size(), record.version);
    }
  }
  return record;
}

std::optional<DeviceRecord> DeviceDirectory::Parse(const common::RedisReply& reply,
                                                   const std::string& device_id) const {
  auto record = ParseRecord(reply);
  if (!record || !options_.open_secret || record->sealed_secret.empty()) {
    return record;
  }
  {
    // A resync re-reads every record: open only secrets that changed.
    std::lock_guard lock(mutex_);
    if (const auto it = entries_.find(device_id);
        it != entries_.end() && it->second.record && it->second.record->secret &&
        it->second.record->sealed_secret == record->sealed_secret) {
      record->secret = it->second.record->secret;
      return record;
    }
  }
  record->secret = options_.open_secret(record->sealed_secret, device_id);
  return record;
}

std::optional<Lookup> DeviceDirectory::FromMemory(const std::string& device_id,
                                                  std::chrono::steady_clock::time_point now) {
  if (const auto it = entries_.find(device_id); it != entries_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    if (Trusted(it->second, now)) {
      const auto& record = it->second.record;
      return Lookup{.status = record ? LookupStatus::kFound : LookupStatus::kNotFound,
                    .record = record,
                    .stale = false};
    }
    return std::nullopt;
  }
  if (const auto it = unknown_.find(device_id);
      it != unknown_.end() && now - it->second.fetched < options_.unknown_ttl) {
    return Lookup{.status = LookupStatus::kNotFound, .record = std::nullopt, .stale = false};
  }
  return std::nullopt;
}

std::optional<Lookup> DeviceDirectory::FindInMemory(const std::string& device_id) {
  const auto now = clock_();
  std::lock_guard lock(mutex_);
  return FromMemory(device_id, now);
}

bool DeviceDirectory::Holds(const std::string& device_id) const {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(device_id);
  return it != entries_.end() && it->second.record.has_value();
}

Lookup DeviceDirectory::Find(const std::string& device_id) {
  const auto now = clock_();
  std::optional<DeviceRecord> cached;
  bool have_cached = false;
  std::chrono::steady_clock::time_point fetched;
  uint64_t read_seq = 0;
  {
    std::lock_guard lock(mutex_);
    if (auto answer = FromMemory(device_id, now)) {
      return *std::move(answer);
    }
    if (const auto it = entries_.find(device_id); it != entries_.end()) {
      cached = it->second.record;
      fetched = it->second.fetched;
      have_cached = true;
    }
    read_seq = ++read_seq_;
  }

  auto reply = redis_->Command({"HGETALL", DeviceKey(device_id)});
  if (reply.ok() && !reply->is_error()) {
    auto record = Parse(*reply, device_id);
    if (record || have_cached) {
      Store(device_id, record, clock_(), read_seq);
    } else {
      // Not one of ours (or not yet): kept apart, so that it cannot evict a real device.
      std::lock_guard lock(mutex_);
      RememberUnknown(device_id, clock_());
    }
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
  const uint64_t read_seq = NextReadSeq();
  auto replies = background_.Pipeline(commands);
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
  result.devices.reserve(device_ids.size());
  for (size_t i = 0; i < device_ids.size(); ++i) {
    auto record = Parse((*replies)[i + 1], device_ids[i]);
    if (record || result.projection_ready) {
      Store(device_ids[i], record, now, read_seq);
    } else {
      // A missing key while the projection is rebuilt says nothing: keep what we had, but no
      // longer as current (Find asks Redis again once its TTL is over).
      Untrust(device_ids[i]);
    }
    result.devices.push_back(RefreshedDevice{.device_id = device_ids[i], .record = record});
  }
  return result;
}

std::optional<RefreshResult> DeviceDirectory::Resync(const std::vector<std::string>& also) {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mutex_);
    ids.reserve(entries_.size() + also.size());
    for (const auto& [id, entry] : entries_) {
      ids.push_back(id);
    }
  }
  std::unordered_set<std::string> seen(ids.begin(), ids.end());
  for (const auto& id : also) {
    if (seen.insert(id).second) {
      ids.push_back(id);
    }
  }
  bool truncated = false;
  const std::string pattern = DeviceKey("*");
  const std::string count = std::to_string(options_.batch);
  std::string cursor = "0";
  do {
    auto reply = background_.Command({"SCAN", cursor, "MATCH", pattern, "COUNT", count});
    if (!reply.ok() || reply->type != common::RedisReply::Type::kArray ||
        reply->elements.size() != 2) {
      return std::nullopt;
    }
    cursor = reply->elements[0].str;
    for (const auto& key : reply->elements[1].elements) {
      std::string id = key.str.substr(kDeviceKeyPrefix.size());
      if (seen.contains(id)) {
        continue;
      }
      if (ids.size() >= options_.capacity) {
        truncated = true;
        break;
      }
      seen.insert(id);
      ids.push_back(std::move(id));
    }
  } while (cursor != "0" && !truncated);

  RefreshResult result;
  result.projection_ready = true;
  result.devices.reserve(ids.size());
  for (size_t start = 0; start < ids.size(); start += options_.batch) {
    const size_t end = std::min(ids.size(), start + options_.batch);
    auto batch = Refresh(std::vector<std::string>(ids.begin() + static_cast<std::ptrdiff_t>(start),
                                                  ids.begin() + static_cast<std::ptrdiff_t>(end)));
    if (!batch) {
      return std::nullopt;
    }
    result.projection_ready = result.projection_ready && batch->projection_ready;
    std::move(batch->devices.begin(), batch->devices.end(), std::back_inserter(result.devices));
  }
  std::lock_guard lock(mutex_);
  complete_ = !truncated;
  return result;
}

std::optional<RefreshResult> DeviceDirectory::Reload(const std::string& device_id, bool force) {
  {
    std::lock_guard lock(mutex_);
    // A change for this id (created, most likely): no longer "no such device".
    ForgetUnknown(device_id);
    if (!force && !complete_ && !entries_.contains(device_id)) {
      return RefreshResult{};
    }
  }
  auto result = Refresh({device_id});
  if (!result) {
    // Could not confirm the change: at least do not let the old record admit the device.
    Invalidate(device_id);
  }
  return result;
}

void DeviceDirectory::SetLive(bool live) {
  std::lock_guard lock(mutex_);
  if (live) {
    live_ = true;
    live_since_ = read_seq_;
    return;
  }
  if (!live_) {
    return;
  }
  live_ = false;
  // Records the subscription kept current were current until now: from here on they are as old
  // as the TTL (Find asks Redis again), and usable while Redis is down for `max_stale`.
  const auto expired = clock_() - options_.ttl;
  for (auto& [id, entry] : entries_) {
    if (entry.read_seq > live_since_) {
      entry.fetched = expired;
    }
  }
}

void DeviceDirectory::Invalidate(const std::string& device_id) {
  std::lock_guard lock(mutex_);
  ForgetUnknown(device_id);
  if (const auto it = entries_.find(device_id); it != entries_.end()) {
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }
}

size_t DeviceDirectory::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

size_t DeviceDirectory::unknown_size() const {
  std::lock_guard lock(mutex_);
  return unknown_.size();
}

void DeviceDirectory::RememberUnknown(const std::string& device_id,
                                      std::chrono::steady_clock::time_point now) {
  if (entries_.contains(device_id) || options_.unknown_capacity == 0) {
    return;  // read meanwhile by the change watcher: its record wins
  }
  if (const auto it = unknown_.find(device_id); it != unknown_.end()) {
    it->second.fetched = now;
    unknown_order_.splice(unknown_order_.begin(), unknown_order_, it->second.order);
    return;
  }
  while (!unknown_order_.empty() && unknown_.size() >= options_.unknown_capacity) {
    unknown_.erase(unknown_order_.back());
    unknown_order_.pop_back();
  }
  unknown_order_.push_front(device_id);
  unknown_.emplace(device_id, Unknown{.fetched = now, .order = unknown_order_.begin()});
}

void DeviceDirectory::ForgetUnknown(const std::string& device_id) {
  if (const auto it = unknown_.find(device_id); it != unknown_.end()) {
    unknown_order_.erase(it->second.order);
    unknown_.erase(it);
  }
}

bool DeviceDirectory::complete() const {
  std::lock_guard lock(mutex_);
  return complete_;
}

void DeviceDirectory::Untrust(const std::string& device_id) {
  std::lock_guard lock(mutex_);
  if (const auto it = entries_.find(device_id); it != entries_.end()) {
    it->second.read_seq = std::min(it->second.read_seq, live_since_);
  }
}

uint64_t DeviceDirectory::NextReadSeq() {
  std::lock_guard lock(mutex_);
  return ++read_seq_;
}

bool DeviceDirectory::Trusted(const Entry& entry, std::chrono::steady_clock::time_point now) const {
  if (live_ && entry.record && entry.read_seq > live_since_) {
    return true;
  }
  return now - entry.fetched < options_.ttl;
}

void DeviceDirectory::Store(const std::string& device_id, std::optional<DeviceRecord> record,
                            std::chrono::steady_clock::time_point now, uint64_t read_seq) {
  std::lock_guard lock(mutex_);
  if (record) {
    ForgetUnknown(device_id);
  }
  if (const auto it = entries_.find(device_id); it != entries_.end()) {
    if (it->second.read_seq > read_seq) {
      return;
    }
    it->second.record = std::move(record);
    it->second.fetched = now;
    it->second.read_seq = read_seq;
    return;
  }
  while (!lru_.empty() && entries_.size() >= options_.capacity) {
    entries_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(device_id);
  entries_.emplace(
      device_id,
      Entry{
          .record = std::move(record), .fetched = now, .read_seq = read_seq, .lru = lru_.begin()});
}

}  // namespace iot::broker
