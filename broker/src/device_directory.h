#pragma once

// Device credentials from the thing-model projection in Redis (docs/redis-projection.md), behind
// a bounded, short-lived cache.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "iot/common/redis.h"

namespace iot::broker {

/// `tm:dev:{device_id}`.
struct DeviceRecord {
  std::string tenant_id;
  std::string product_id;
  std::string node_id;
  bool frozen = false;
  /// SecretBox-sealed secret; empty for a certificate-only device.
  std::string sealed_secret;
  /// Lowercase hex SHA-256 of the certificate (DER); empty if none.
  std::string fingerprint;
  int64_t version = 0;
};

enum class LookupStatus {
  kFound,
  kNotFound,
  /// Redis did not answer and the cache has nothing usable: callers fail closed.
  kUnavailable,
};

struct Lookup {
  LookupStatus status = LookupStatus::kUnavailable;
  std::optional<DeviceRecord> record;
  /// The record is older than the TTL, used because Redis is unreachable.
  bool stale = false;
};

/// One device re-read by Refresh().
struct RefreshedDevice {
  std::string device_id;
  std::optional<DeviceRecord> record;  ///< nullopt: no key.
};

struct RefreshResult {
  std::vector<RefreshedDevice> devices;
  /// `tm:projection:ready` exists: a missing key means the device was deleted (otherwise the
  /// projection is being rebuilt and a missing key means nothing yet).
  bool projection_ready = false;
};

/// Thread-safe.
class DeviceDirectory {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  struct Options {
    size_t capacity = 10000;
    std::chrono::milliseconds ttl{5000};
    std::chrono::milliseconds max_stale{std::chrono::minutes{5}};
  };

  DeviceDirectory(std::unique_ptr<common::RedisClient> redis, Options options, Clock clock = {});

  /// The device's record: from the cache while fresh, else from Redis (one round trip). When
  /// Redis fails, a cached record up to `max_stale` old is returned with `stale`; otherwise
  /// kUnavailable.
  Lookup Find(const std::string& device_id);

  /// Re-reads `device_ids` from Redis in one pipeline and refreshes their cache entries.
  /// nullopt when Redis is unavailable.
  std::optional<RefreshResult> Refresh(const std::vector<std::string>& device_ids);

  void Invalidate(const std::string& device_id);

  [[nodiscard]] size_t size() const;

  /// Parses an HGETALL reply; nullopt for an empty (missing) hash.
  static std::optional<DeviceRecord> ParseRecord(const common::RedisReply& reply);

 private:
  struct Entry {
    std::optional<DeviceRecord> record;
    std::chrono::steady_clock::time_point fetched;
    std::list<std::string>::iterator lru;
  };

  void Store(const std::string& device_id, std::optional<DeviceRecord> record,
             std::chrono::steady_clock::time_point now);

  const std::unique_ptr<common::RedisClient> redis_;
  const Options options_;
  const Clock clock_;

  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  ///< Most recently stored first.
};

}  // namespace iot::broker
