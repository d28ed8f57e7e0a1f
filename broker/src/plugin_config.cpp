#include "plugin_config.h"

#include <fmt/format.h>

#include <charconv>
#include <map>
#include <set>
#include <type_traits>

#include "absl/status/status.h"
#include "iot/common/crypto.h"
#include "iot/common/url.h"

namespace iot::broker {
namespace {

absl::Status OptionError(std::string_view key, std::string_view problem) {
  return absl::InvalidArgumentError(fmt::format("plugin_opt_{}: {}", key, problem));
}

absl::StatusOr<int64_t> ParsePositive(std::string_view key, std::string_view value) {
  int64_t out = 0;
  const auto* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, out);
  if (ec != std::errc() || ptr != end || out <= 0) {
    return OptionError(key, fmt::format("'{}' is not a positive integer", value));
  }
  return out;
}

bool IsLowerHex(std::string_view text) {
  for (const char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::vector<std::string_view> SplitEntries(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    const bool separator =
        i == text.size() || text[i] == ',' || text[i] == ' ' || text[i] == '\t' || text[i] == '\n';
    if (separator) {
      if (i > start) {
        out.push_back(text.substr(start, i - start));
      }
      start = i + 1;
    }
  }
  return out;
}

}  // namespace

bool VerifyServiceAccountPassword(const ServiceAccount& account, std::string_view password) {
  std::string salted = account.salt;
  salted.append(password);
  return common::ConstantTimeEquals(common::Sha256Hex(salted), account.password_sha256);
}

absl::StatusOr<std::vector<ServiceAccount>> ParseServiceAccounts(std::string_view text) {
  std::vector<ServiceAccount> accounts;
  std::set<std::string, std::less<>> names;
  for (const auto entry : SplitEntries(text)) {
    const size_t first = entry.find(':');
    const size_t second = first == std::string_view::npos ? first : entry.find(':', first + 1);
    if (second == std::string_view::npos) {
      return absl::InvalidArgumentError(
          "a service account is not name:salt:sha256hex(salt+password)");
    }
    ServiceAccount account{.name = std::string(entry.substr(0, first)),
                           .salt = std::string(entry.substr(first + 1, second - first - 1)),
                           .password_sha256 = std::string(entry.substr(second + 1))};
    if (account.name.empty() || account.name.find('_') != std::string::npos) {
      return absl::InvalidArgumentError(fmt::format(
          "service account name '{}' is empty or contains '_' (device ids do)", account.name));
    }
    if (account.password_sha256.size() != 64 || !IsLowerHex(account.password_sha256)) {
      return absl::InvalidArgumentError(fmt::format(
          "service account '{}': the hash is not 64 lowercase hex characters", account.name));
    }
    if (!names.insert(account.name).second) {
      return absl::InvalidArgumentError(
          fmt::format("service account '{}' is listed twice", account.name));
    }
    accounts.push_back(std::move(account));
  }
  return accounts;
}

namespace {

using NumericSetters = std::map<std::string, std::function<absl::Status(int64_t)>, std::less<>>;

/// The numeric options, each with what stores its value in `config`.
NumericSetters NumericOptions(PluginConfig& config) {
  const auto size = [](size_t& out) {
    return [&out](int64_t v) {
      out = static_cast<size_t>(v);
      return absl::OkStatus();
    };
  };
  const auto duration = [](auto& out) {
    return [&out](int64_t v) {
      out = std::remove_reference_t<decltype(out)>{v};
      return absl::OkStatus();
    };
  };
  const auto rate = [](double& out) {
    return [&out](int64_t v) {
      out = static_cast<double>(v);
      return absl::OkStatus();
    };
  };
  return {
      {"cache_ttl_ms", duration(config.cache_ttl)},
      {"cache_size", size(config.cache_size)},
      {"cache_max_stale_ms", duration(config.cache_max_stale)},
      {"redis_timeout_ms", duration(config.redis_timeout)},
      {"time_skew_s", duration(config.time_skew)},
      {"recheck_interval_ms", duration(config.recheck_interval)},
      {"unknown_cache_size", size(config.unknown_cache_size)},
      {"unknown_cache_ttl_ms", duration(config.unknown_cache_ttl)},
      {"connect_rate_per_address", rate(config.connect_rate_per_address)},
      {"connect_burst_per_address", rate(config.connect_burst_per_address)},
      {"lookup_rate", rate(config.lookup_rate)},
      {"stats_interval_ms", duration(config.stats_interval)},
      {"uplink_partitions",
       [&config](int64_t v) {
         if (v > kMaxUplinkPartitions) {
           return absl::InvalidArgumentError(fmt::format("at most {}", kMaxUplinkPartitions));
         }
         config.uplink_partitions = static_cast<uint32_t>(v);
         return absl::OkStatus();
       }},
  };
}

/// What the options say about values that come from elsewhere (the environment).
struct Indirect {
  bool has_secret_key = false;
  std::string secret_key_env;
  std::string service_accounts_text;
  std::string service_accounts_env;
};

absl::Status ReadOptions(const std::vector<std::pair<std::string, std::string>>& options,
                         PluginConfig& config, Indirect& indirect) {
  const NumericSetters numeric = NumericOptions(config);
  for (const auto& [key, value] : options) {
    if (key == "redis_url") {
      config.redis_url = value;
    } else if (key == "secret_key") {
      config.secret_key = value;
      indirect.has_secret_key = true;
    } else if (key == "secret_key_env") {
      indirect.secret_key_env = value;
    } else if (key == "service_accounts") {
      indirect.service_accounts_text += " " + value;
    } else if (key == "service_accounts_env") {
      indirect.service_accounts_env = value;
    } else if (const auto setter = numeric.find(key); setter != numeric.end()) {
      auto number = ParsePositive(key, value);
      if (!number.ok()) {
        return number.status();
      }
      if (absl::Status set = setter->second(*number); !set.ok()) {
        return OptionError(key, std::string(set.message()));
      }
    } else {
      return OptionError(key, "unknown option");
    }
  }
  return absl::OkStatus();
}

/// The secret key from secret_key, else from the environment variable secret_key_env names.
absl::Status ResolveSecretKey(const Indirect& indirect,
                              const std::function<const char*(const char*)>& getenv,
                              PluginConfig& config) {
  if (!indirect.has_secret_key) {
    if (indirect.secret_key_env.empty()) {
      return OptionError("secret_key_env",
                         "required (or plugin_opt_secret_key): the environment variable holding "
                         "IOT_SECRET_KEY");
    }
    const char* value = getenv(indirect.secret_key_env.c_str());
    if (value == nullptr || *value == '\0') {
      return OptionError("secret_key_env", fmt::format("environment variable {} is not set",
                                                       indirect.secret_key_env));
    }
    config.secret_key = value;
  }
  if (auto box = common::SecretBox::FromKeyText(config.secret_key); !box.ok()) {
    return OptionError(indirect.has_secret_key ? "secret_key" : "secret_key_env",
                       "not a 32-byte key (64 hex characters or base64)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PluginConfig> ParsePluginConfig(
    const std::vector<std::pair<std::string, std::string>>& options,
    const std::function<const char*(const char*)>& getenv) {
  PluginConfig config;
  Indirect indirect;
  if (absl::Status read = ReadOptions(options, config, indirect); !read.ok()) {
    return read;
  }

  if (config.redis_url.empty()) {
    return OptionError("redis_url", "required (redis://host:port/db)");
  }
  if (auto url = common::ParseUrl(config.redis_url, 6379); !url.ok() || url->scheme != "redis") {
    return OptionError(
        "redis_url", fmt::format("'{}' is not a redis:// URL", common::MaskUrl(config.redis_url)));
  }

  if (absl::Status secret = ResolveSecretKey(indirect, getenv, config); !secret.ok()) {
    return secret;
  }

  std::string service_accounts_text = indirect.service_accounts_text;
  if (!indirect.service_accounts_env.empty()) {
    const char* value = getenv(indirect.service_accounts_env.c_str());
    if (value != nullptr) {
      service_accounts_text += " ";
      service_accounts_text += value;
    }
  }
  auto accounts = ParseServiceAccounts(service_accounts_text);
  if (!accounts.ok()) {
    return OptionError("service_accounts", std::string(accounts.status().message()));
  }
  config.service_accounts = *std::move(accounts);
  return config;
}

std::string DescribeConfig(const PluginConfig& config) {
  std::string names;
  for (const auto& account : config.service_accounts) {
    names += names.empty() ? account.name : "," + account.name;
  }
  return fmt::format(
      "redis_url={} secret_key=*** service_accounts=[{}] cache_ttl_ms={} cache_size={} "
      "cache_max_stale_ms={} redis_timeout_ms={} time_skew_s={} recheck_interval_ms={} "
      "uplink_partitions={} unknown_cache_size={} unknown_cache_ttl_ms={} "
      "connect_rate_per_address={} connect_burst_per_address={} lookup_rate={} "
      "stats_interval_ms={}",
      common::MaskUrl(config.redis_url), names, config.cache_ttl.count(), config.cache_size,
      config.cache_max_stale.count(), config.redis_timeout.count(), config.time_skew.count(),
      config.recheck_interval.count(), config.uplink_partitions, config.unknown_cache_size,
      config.unknown_cache_ttl.count(), config.connect_rate_per_address,
      config.connect_burst_per_address, config.lookup_rate, config.stats_interval.count());
}

}  // namespace iot::broker
