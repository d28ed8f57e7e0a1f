#include "iot/common/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>

#include "iot/common/url.h"

namespace iot::common {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty()) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

EnvReader::EnvReader()
    : lookup_([](const std::string& name) -> std::optional<std::string> {
        const char* v = std::getenv(name.c_str());
        return v ? std::optional<std::string>(v) : std::nullopt;
      }) {}

EnvReader::EnvReader(Lookup lookup) : lookup_(std::move(lookup)) {}

std::optional<std::string> EnvReader::Get(const std::string& name) const {
  auto v = lookup_(name);
  if (v && v->empty()) {
    return std::nullopt;  // set but empty counts as unset
  }
  return v;
}

std::string EnvReader::String(const std::string& name, std::string_view fallback) {
  return Get(name).value_or(std::string(fallback));
}

std::string EnvReader::Required(const std::string& name) {
  auto v = Get(name);
  if (!v) {
    AddError(name, "is required but not set");
    return {};
  }
  return *v;
}

int64_t EnvReader::Int(const std::string& name, int64_t fallback, int64_t min, int64_t max) {
  auto v = Get(name);
  if (!v) {
    return fallback;
  }
  auto parsed = ParseInt(*v);
  if (!parsed) {
    AddError(name, fmt::format("'{}' is not an integer", *v));
    return fallback;
  }
  if (*parsed < min || *parsed > max) {
    AddError(name, fmt::format("{} is out of range [{}, {}]", *parsed, min, max));
    return fallback;
  }
  return *parsed;
}

uint16_t EnvReader::Port(const std::string& name, uint16_t fallback) {
  return static_cast<uint16_t>(Int(name, fallback, 0, 65535));
}

bool EnvReader::Bool(const std::string& name, bool fallback) {
  auto v = Get(name);
  if (!v) {
    return fallback;
  }
  const std::string s = Lower(*v);
  if (s == "1" || s == "true" || s == "yes" || s == "on") {
    return true;
  }
  if (s == "0" || s == "false" || s == "no" || s == "off") {
    return false;
  }
  AddError(name, fmt::format("'{}' is not a boolean (true/false)", *v));
  return fallback;
}

std::chrono::milliseconds EnvReader::Duration(const std::string& name,
                                              std::chrono::milliseconds fallback) {
  auto v = Get(name);
  if (!v) {
    return fallback;
  }
  std::string_view s = *v;
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) {
    ++digits;
  }
  auto number = ParseInt(s.substr(0, digits));
  const std::string_view unit = s.substr(digits);
  int64_t factor = 0;
  if (unit == "ms") {
    factor = 1;
  } else if (unit.empty() || unit == "s") {
    factor = 1000;
  } else if (unit == "m") {
    factor = 60'000;
  } else if (unit == "h") {
    factor = 3'600'000;
  } else if (unit == "d") {
    factor = 86'400'000;
  }
  if (!number || factor == 0) {
    AddError(name, fmt::format("'{}' is not a duration (e.g. 500ms, 10s, 5m, 1h, 1d)", *v));
    return fallback;
  }
  return std::chrono::milliseconds(*number * factor);
}

std::string EnvReader::LogLevel(const std::string& name, std::string_view fallback) {
  return Enum(name, fallback, {"trace", "debug", "info", "warn", "error", "critical", "off"});
}

std::string EnvReader::Enum(const std::string& name, std::string_view fallback,
                            const std::vector<std::string_view>& allowed) {
  auto v = Get(name);
  if (!v) {
    return std::string(fallback);
  }
  std::string s = Lower(*v);
  if (std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
    AddError(name, fmt::format("'{}' is not one of {}", *v, fmt::join(allowed, ", ")));
    return std::string(fallback);
  }
  return s;
}

void EnvReader::AddError(const std::string& name, const std::string& problem) {
  errors_.push_back(name + ": " + problem);
}

void EnvReader::Finish() const {
  if (!errors_.empty()) {
    throw ConfigError(fmt::format("invalid configuration: {}", fmt::join(errors_, "; ")));
  }
}

ServerConfig ServerConfig::Read(EnvReader& env, std::string service, const std::string& prefix,
                                uint16_t default_grpc_port, uint16_t default_metrics_port) {
  ServerConfig c;
  c.service = std::move(service);
  c.listen_address = env.String(prefix + "_LISTEN_ADDRESS", c.listen_address);
  c.grpc_port = env.Port(prefix + "_GRPC_PORT", default_grpc_port);
  c.metrics_port = env.Port(prefix + "_METRICS_PORT", default_metrics_port);
  c.log_level = env.LogLevel(prefix + "_LOG_LEVEL", env.LogLevel("IOT_LOG_LEVEL", c.log_level));
  c.drain_timeout = env.Duration(prefix + "_DRAIN_TIMEOUT", c.drain_timeout);
  c.probe_interval = env.Duration(prefix + "_PROBE_INTERVAL", c.probe_interval);
  // Below 4 levels the platform's own documents (a command's paras, a property set) no longer
  // fit; far above a few hundred the recursive walks need stack that a thread may not have.
  c.json.max_depth = static_cast<size_t>(
      env.Int("IOT_JSON_MAX_DEPTH", static_cast<int64_t>(c.json.max_depth), 4, 512));
  c.json.max_bytes = static_cast<size_t>(env.Int(
      "IOT_JSON_MAX_BYTES", static_cast<int64_t>(c.json.max_bytes), 1024, 64 * 1024 * 1024));
  return c;
}

BackendConfig BackendConfig::Read(EnvReader& env, const std::string& prefix,
                                  const std::string& service,
                                  std::chrono::milliseconds default_session_expiry) {
  BackendConfig c;
  c.pg_url = env.String("IOT_PG_URL", "postgresql://postgres@127.0.0.1:5432/iot");
  c.pg_pool_size = env.Int(prefix + "_PG_POOL_SIZE", c.pg_pool_size, 1, 256);
  c.redis_url = env.String("IOT_REDIS_URL", "redis://127.0.0.1:6379/0");
  c.mqtt_url = env.String("IOT_MQTT_URL", "mqtt://127.0.0.1:1883");
  c.mqtt_username = env.String(prefix + "_MQTT_USERNAME", "");
  c.mqtt_password = env.String(prefix + "_MQTT_PASSWORD", "");
  c.mqtt_ca_file = env.String("IOT_MQTT_CA_FILE", "");
  std::array<char, 256> host{};
  gethostname(host.data(), host.size() - 1);
  c.mqtt_client_id = env.String(prefix + "_MQTT_CLIENT_ID", service + "-" + host.data());
  c.mqtt_session_expiry = env.Duration(prefix + "_MQTT_SESSION_EXPIRY", default_session_expiry);
  for (const auto& [name, url] :
       {std::pair<std::string, const std::string*>{"IOT_PG_URL", &c.pg_url},
        {"IOT_REDIS_URL", &c.redis_url},
        {"IOT_MQTT_URL", &c.mqtt_url}}) {
    if (auto parsed = ParseUrl(*url); !parsed.ok()) {
      env.AddError(name, std::string(parsed.status().message()));
    }
  }
  return c;
}

}  // namespace iot::common
