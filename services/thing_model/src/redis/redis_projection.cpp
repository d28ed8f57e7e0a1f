#include "iot/thing_model/redis_projection.h"

#include <chrono>
#include <unordered_set>

namespace iot::thing_model {
namespace {

constexpr const char* kDevicePrefix = "tm:dev:";
constexpr const char* kKeyPrefix = "tm:key:";
constexpr const char* kReadyKey = "tm:projection:ready";
constexpr const char* kChangesChannel = "tm:changes";

std::string NowMillis() {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count());
}

/// Appends the commands that replace `d`'s hash as one transaction: the whole hash goes, so
/// that removed fields (a cleared fingerprint) disappear.
void AppendPutDevice(const DeviceRecord& d, std::vector<std::vector<std::string>>& commands) {
  const std::string key = kDevicePrefix + d.device_id;
  std::vector<std::string> hset = {
      "HSET",    key,       "tenant_id", d.tenant_id,          "product_id", d.product_id,
      "node_id", d.node_id, "frozen",    d.frozen ? "1" : "0", "version",    NowMillis()};
  if (!d.secret_sealed.empty()) {
    hset.insert(hset.end(), {"secret", d.secret_sealed});
  }
  if (!d.fingerprint.empty()) {
    hset.insert(hset.end(), {"fingerprint", d.fingerprint});
  }
  if (d.dialect == kDialectAlink) {
    hset.insert(hset.end(), {"dialect", d.dialect});
  }
  commands.push_back({"MULTI"});
  commands.push_back({"DEL", key});
  commands.push_back(std::move(hset));
  commands.push_back({"EXEC"});
}

}  // namespace

absl::Status RedisProjection::Exec(const std::vector<std::vector<std::string>>& commands) {
  auto replies = redis_->Pipeline(commands);
  if (!replies.ok()) {
    return replies.status();
  }
  for (const auto& reply : *replies) {
    if (reply.is_error()) {
      return absl::UnavailableError("redis: " + reply.str);
    }
  }
  return absl::OkStatus();
}

absl::Status RedisProjection::PutDevice(const DeviceRecord& d) {
  std::vector<std::vector<std::string>> commands;
  AppendPutDevice(d, commands);
  return Exec(commands);
}

absl::Status RedisProjection::PutDevices(const std::vector<DeviceRecord>& devices) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(devices.size() * 4);
  for (const auto& d : devices) {
    AppendPutDevice(d, commands);
  }
  return commands.empty() ? absl::OkStatus() : Exec(commands);
}

absl::Status RedisProjection::DeleteDevice(const DeviceRecord& d) {
  return Exec({{"DEL", kDevicePrefix + d.device_id}});
}

absl::Status RedisProjection::PutKey(const ApiKeyRecord& k, bool root_tenant) {
  return Exec({{"HSET", kKeyPrefix + k.key_hash, "tenant_id", k.tenant_id, "role",
                std::string(common::RoleName(k.role)), "key_id", k.key_id, "root",
                root_tenant ? "1" : "0"}});
}

absl::Status RedisProjection::DeleteKey(const ApiKeyRecord& k) {
  return Exec({{"DEL", kKeyPrefix + k.key_hash}});
}

absl::Status RedisProjection::PublishChange(const std::string& json) {
  return Exec({{"PUBLISH", kChangesChannel, json}});
}

absl::StatusOr<bool> RedisProjection::IsReady() {
  auto reply = redis_->Command({"EXISTS", kReadyKey});
  if (!reply.ok()) {
    return reply.status();
  }
  return reply->integer == 1;
}

absl::Status RedisProjection::MarkReady() { return Exec({{"SET", kReadyKey, "1"}}); }

absl::Status RedisProjection::RemoveStaleWithPrefix(const std::string& prefix,
                                                    const std::vector<std::string>& live) {
  const std::unordered_set<std::string> keep(live.begin(), live.end());
  // SCAN walks the whole keyspace, which the platform's other keys (rule-forwarding's dedupe
  // marks: a million after a few minutes at 2,000 reports/s) make far larger than the
  // projection; with COUNT 1000 a rebuild took 90 s of round trips on a loaded machine.
  std::string cursor = "0";
  do {
    auto reply = redis_->Command({"SCAN", cursor, "MATCH", prefix + "*", "COUNT", "20000"});
    if (!reply.ok()) {
      return reply.status();
    }
    if (reply->elements.size() != 2) {
      return absl::UnavailableError("redis: unexpected SCAN reply");
    }
    cursor = reply->elements[0].str;
    std::vector<std::string> del = {"DEL"};
    for (const auto& key : reply->elements[1].elements) {
      if (keep.count(key.str.substr(prefix.size())) == 0) {
        del.push_back(key.str);
      }
    }
    if (del.size() > 1) {
      if (absl::Status s = Exec({del}); !s.ok()) {
        return s;
      }
    }
  } while (cursor != "0");
  return absl::OkStatus();
}

absl::Status RedisProjection::RemoveStale(const std::vector<std::string>& live_device_ids,
                                          const std::vector<std::string>& live_key_hashes) {
  if (absl::Status s = RemoveStaleWithPrefix(kDevicePrefix, live_device_ids); !s.ok()) {
    return s;
  }
  return RemoveStaleWithPrefix(kKeyPrefix, live_key_hashes);
}

}  // namespace iot::thing_model
