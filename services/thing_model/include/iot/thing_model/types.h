#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "iot/common/auth.h"

/// Domain types of the thing-model service: no gRPC, no SQL.
namespace iot::thing_model {

struct TenantRecord {
  std::string tenant_id;
  std::string name;
  bool root = false;
  std::string create_time;  ///< RFC 3339 UTC
};

struct ApiKeyRecord {
  std::string key_id;
  std::string tenant_id;
  std::string name;
  common::Role role = common::Role::kReader;
  std::string key_hash;
  std::string prefix;
  std::string create_time;
  std::string revoke_time;  ///< empty while active
};

/// A product's protocol dialect: how its devices connect and talk (issue 17).
inline constexpr const char* kDialectHuawei = "huawei";  ///< Huawei IoTDA (the default)
inline constexpr const char* kDialectAlink = "alink";    ///< Alibaba Cloud IoT (Alink, TSL)

struct ProductRecord {
  std::string product_id;
  std::string tenant_id;
  std::string name;
  std::string device_type;
  std::string protocol_type;
  std::string data_format;
  std::string manufacturer_name;
  std::string industry;
  std::string description;
  int32_t model_version = 0;
  std::string create_time;
  std::string update_time;
  std::string product_json;  ///< of `model_version`; empty in lists
  int64_t device_count = 0;
  std::string dialect = kDialectHuawei;
  /// alink: the TSL of `model_version` as imported (product_json is derived from it); empty in
  /// lists and for huawei products.
  std::string tsl_json;
};

enum class Connection { kInactive, kOnline, kOffline };

struct DeviceRecord {
  std::string device_id;
  std::string tenant_id;
  std::string product_id;
  std::string node_id;
  std::string device_name;
  std::string description;
  std::map<std::string, std::string> tags;
  std::string secret_sealed;  ///< SecretBox-sealed; empty: no secret
  std::string fingerprint;
  bool frozen = false;
  Connection connection = Connection::kInactive;
  std::string presence_time;
  std::string last_online_time;
  std::string last_offline_time;
  std::string create_time;
  /// The product's dialect (read with the device, never written with it).
  std::string dialect = kDialectHuawei;
};

/// Keyset paging: `marker` is the last id of the previous page.
struct PageRequest {
  int32_t limit = 50;
  std::string marker;
};

struct ProductFilter {
  std::string name_contains;
  std::string device_type;
};

struct DeviceFilter {
  std::string product_id;
  /// "INACTIVE", "ONLINE", "OFFLINE" or "FROZEN"; empty: any.
  std::string status;
  std::string tag_key;
  std::string tag_value;
  std::string name_prefix;
};

template <typename T>
struct Page {
  std::vector<T> items;
  std::string next_marker;
};

}  // namespace iot::thing_model
