#pragma once

// Device credentials from the thing-model projection in Redis (docs/redis-projection.md), held in
// memory so that a CONNECT of a known device needs no Redis round trip on the broker's thread.
//
// The change watcher loads the projection in the background (SCAN `tm:dev:*` + pipelined
// HGETALL, up to `capacity` devices) each time it (re)subscribes to `tm:changes`, re-reads a
// device on each of its changes and everything held every resync interval. A record read while
// the subscription is live stays trusted until a change replaces it; any other record (read
// before the subscription, or while it is down) only for `ttl`, after which Find reads Redis
// again. A device not held (created a moment ago, or beyond capacity: least recently used
// records make room) costs one Redis read on the broker thread.
//
// "No such device" answers for ids not held are kept apart, in a bounded set of their own with a
// short TTL, so that a flood of made-up ids can neither evict real credentials nor make every
// connect of the same id read Redis again; a `tm:changes` message for an id takes it out.

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
  /// `sealed_secret` opened when the record was read (Options::open_secret), so that a connect
  /// does not decrypt it; nullopt when not opened (no opener, or it failed: opening again tells
  /// why).
  std::optional<std::string> secret;
  /// Lowercase hex SHA-256 of the certificate (DER); empty if none.
  std::string fingerprint;
  /// `alink` for a device of an Alink product (it connects only in the Alink form); empty or
  /// `huawei` for an IoTDA device.
  std::string dialect;
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
    /// Records held (known and deleted devices).
    size_t capacity = 100000;
    /// How long a record not kept current by `tm:changes` is trusted.
    std::chrono::milliseconds ttl{5000};
    /// Ids not held that Redis said do not exist: at most this many, each for `unknown_ttl`.
    size_t unknown_capacity = 100000;
    std::chrono::milliseconds unknown_ttl{5000};
    std::chrono::milliseconds max_stale{std::chrono::minutes{5}};
    /// Devices per pipeline when loading.
    size_t batch = 1000;
    /// Opens a sealed secret (sealed, device id); nullopt when it cannot.
    std::function<std::optional<std::string>(const std::string&, const std::string&)> open_secret;
  };

  /// `redis` serves Find on the broker thread (tight timeout); `background` the loads and
  /// re-reads of the change watcher's thread (a longer timeout: a pipeline of a thousand
  /// records on a busy machine), or `redis` when null.
  DeviceDirectory(std::unique_ptr<common::RedisClient> redis,
                  std::unique_ptr<common::RedisClient> background, Options options,
                  Clock clock = {});

  /// The device's record: from memory while trusted (see above), else from Redis (one round
  /// trip). When Redis fails, a held record up to `max_stale` old is returned with `stale`;
  /// otherwise kUnavailable.
  Lookup Find(const std::string& device_id);
  /// Find without Redis: the answer when memory has a trusted one (a held record, or a recent
  /// "no such device"), nullopt when Find would read Redis.
  std::optional<Lookup> FindInMemory(const std::string& device_id);
  /// True when a record of the device is held, trusted or not (a device known to exist).
  [[nodiscard]] bool Holds(const std::string& device_id) const;

  /// Re-reads `device_ids` from Redis in one pipeline and stores their records.
  /// nullopt when Redis is unavailable.
  std::optional<RefreshResult> Refresh(const std::vector<std::string>& device_ids);

  /// Loads the projection: every device held, `also` (connected devices), then devices found by
  /// SCAN `tm:dev:*` until `capacity` is reached, in pipelines of `batch`. Returns every device
  /// read (for kicks), or nullopt when Redis failed part-way (what was read is kept).
  std::optional<RefreshResult> Resync(const std::vector<std::string>& also = {});

  /// A `tm:changes` message for the device: re-reads it when it is held, when the whole
  /// projection fits in memory (a created device is then known before it connects) or when
  /// `force` (connected). An empty result when skipped; nullopt (and the record dropped) when
  /// Redis failed.
  std::optional<RefreshResult> Reload(const std::string& device_id, bool force);

  /// The `tm:changes` subscription is live (true: records read from now on are kept current by
  /// its messages) or lost (every record falls back to `ttl`).
  void SetLive(bool live);

  void Invalidate(const std::string& device_id);

  [[nodiscard]] size_t size() const;
  /// "No such device" answers held (expired ones included until they make room).
  [[nodiscard]] size_t unknown_size() const;
  /// The last Resync found every device of the projection (none left out for capacity).
  [[nodiscard]] bool complete() const;

  /// Parses an HGETALL reply; nullopt for an empty (missing) hash.
  static std::optional<DeviceRecord> ParseRecord(const common::RedisReply& reply);

 private:
  struct Entry {
    std::optional<DeviceRecord> record;
    std::chrono::steady_clock::time_point fetched;
    /// Order of the read that produced it (see read_seq_).
    uint64_t read_seq = 0;
    std::list<std::string>::iterator lru;
  };

  /// ParseRecord, plus the opened secret.
  std::optional<DeviceRecord> Parse(const common::RedisReply& reply,
                                    const std::string& device_id) const;
  /// Stores a record unless a read issued later already stored one (a slow broker-thread read
  /// must not undo the change watcher's newer one).
  void Store(const std::string& device_id, std::optional<DeviceRecord> record,
             std::chrono::steady_clock::time_point now, uint64_t read_seq);
  /// Keeps the record but no longer trusts it beyond its TTL.
  void Untrust(const std::string& device_id);
  /// The number of the next Redis read; taken before the read is issued.
  uint64_t NextReadSeq();
  /// True when `entry` may be used without asking Redis (mutex_ held).
  bool Trusted(const Entry& entry, std::chrono::steady_clock::time_point now) const;
  /// The answer from memory (mutex_ held); moves a held record to the front of the LRU.
  std::optional<Lookup> FromMemory(const std::string& device_id,
                                   std::chrono::steady_clock::time_point now);
  /// Remembers that Redis had no such device, unless a read meanwhile found it (mutex_ held).
  void RememberUnknown(const std::string& device_id, std::chrono::steady_clock::time_point now);
  void ForgetUnknown(const std::string& device_id);  ///< mutex_ held

  const std::unique_ptr<common::RedisClient> redis_;
  const std::unique_ptr<common::RedisClient> background_owned_;
  common::RedisClient& background_;
  const Options options_;
  const Clock clock_;

  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  ///< Most recently used first.
  struct Unknown {
    std::chrono::steady_clock::time_point fetched;
    std::list<std::string>::iterator order;
  };
  std::unordered_map<std::string, Unknown> unknown_;
  std::list<std::string> unknown_order_;  ///< Most recently answered first.
  uint64_t read_seq_ = 0;
  /// Reads numbered above this were made while the subscription was live.
  bool live_ = false;
  uint64_t live_since_ = 0;
  bool complete_ = false;
};

}  // namespace iot::broker
