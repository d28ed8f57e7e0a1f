#pragma once

// The plugin's configuration, from `plugin_opt_*` lines of mosquitto.conf (see broker/README.md).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace iot::broker {

/// A platform client (device-gateway, ...) that may use `$iot/#` and any client id.
struct ServiceAccount {
  std::string name;
  std::string salt;
  /// Lowercase hex SHA-256(salt + password).
  std::string password_sha256;
};

/// True when `password` is the account's password (constant time in the hash comparison).
bool VerifyServiceAccountPassword(const ServiceAccount& account, std::string_view password);

/// Parses `name:salt:sha256hex(salt+password)` entries separated by commas or whitespace.
/// Names must not contain `_` (every device id does, so a name never shadows a device).
absl::StatusOr<std::vector<ServiceAccount>> ParseServiceAccounts(std::string_view text);

inline constexpr uint32_t kMaxUplinkPartitions = 1024;

struct PluginConfig {
  /// `redis://[:password@]host[:port][/db]` of the thing-model projection.
  std::string redis_url;
  /// IOT_SECRET_KEY text (64 hex characters or base64 of 32 bytes), opens sealed device secrets.
  std::string secret_key;
  std::vector<ServiceAccount> service_accounts;
  /// The in-memory credential projection (DeviceDirectory): at most `cache_size` devices; a
  /// record not kept current by `tm:changes` is trusted for `cache_ttl`; when Redis is
  /// unreachable a known device's record is still used up to `cache_max_stale` old (unknown
  /// devices are refused).
  std::chrono::milliseconds cache_ttl{5000};
  size_t cache_size = 100000;
  std::chrono::milliseconds cache_max_stale{std::chrono::minutes{5}};
  /// Bounds every Redis connect and command made on the broker thread.
  std::chrono::milliseconds redis_timeout{200};
  /// Sign type 1: how far the client id's hour may be from the broker's clock.
  std::chrono::seconds time_skew{3600};
  /// How often the whole projection and every connected device are re-read (besides
  /// `tm:changes`).
  std::chrono::milliseconds recheck_interval{std::chrono::seconds{60}};
  /// Uplink partitions (`iot/up/{partition}/...`, topic_rules.h); announced to the gateways as
  /// the retained `$iot/config/uplink_partitions`.
  uint32_t uplink_partitions = 16;

  // Connect floods (broker/README.md, "Connect floods").
  /// "No such device" answers, held apart from the credentials so that a flood of made-up ids
  /// cannot evict real devices: at most this many, each for `unknown_cache_ttl` (a device created
  /// meanwhile is taken out at once through `tm:changes`).
  size_t unknown_cache_size = 100000;
  std::chrono::milliseconds unknown_cache_ttl{5000};
  /// Per source address, a token bucket of connects that cost something: refused ones and those
  /// that need a Redis read (device not held in memory). Over it, such connects from that address
  /// are refused at once, without Redis; devices held in memory still authenticate. Successful
  /// connects of held devices never take a token: a fleet behind one NAT reconnects freely.
  double connect_rate_per_address = 20;
  double connect_burst_per_address = 200;
  /// Redis reads on the broker thread for devices not held, per second, all addresses together
  /// (a flood from many addresses); beyond it such connects are refused without Redis.
  double lookup_rate = 500;
  /// How often the counts of refused connects and the broker-thread lookup times are logged
  /// (only when something happened).
  std::chrono::milliseconds stats_interval{std::chrono::seconds{60}};
};

/// Builds the configuration from plugin options (keys without `plugin_opt_`). `getenv` reads the
/// environment for `*_env` options. Unknown keys and bad values are errors naming the option.
absl::StatusOr<PluginConfig> ParsePluginConfig(
    const std::vector<std::pair<std::string, std::string>>& options,
    const std::function<const char*(const char*)>& getenv);

/// For the start-up log line: every setting, secrets masked.
std::string DescribeConfig(const PluginConfig& config);

}  // namespace iot::broker
