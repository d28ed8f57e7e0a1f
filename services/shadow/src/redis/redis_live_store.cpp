#include "iot/shadow/redis_live_store.h"

#include <fmt/format.h>

#include <string_view>

#include "iot/common/crypto.h"
#include "iot/common/status.h"

namespace iot::shadow {
namespace {

constexpr std::string_view kShadowPrefix = "shadow:dev:";
constexpr std::string_view kDirtyKey = "shadow:dirty";
constexpr std::string_view kMarkerKey = "shadow:marker";
constexpr std::string_view kRebuildLockKey = "shadow:rebuild-lock";
constexpr std::string_view kOncePrefix = "shadow:msg:";

// Shared by the scripts: the time of a stamped value `<ms> <text>`.
#define IOT_SHADOW_LUA_STAMP \
  "local function stamp(s) return tonumber(string.match(s, '^%-?%d+')) end\n"

// Shared by the scripts that apply a device's messages: field `m` of the device's hash holds the
// fixed-size digests of the last messages applied (newest last). A message is remembered in the
// same step that applies it, so it is never marked without its effect, nor applied twice while
// it is among the last `window` of its device (per-device order: a redelivery is a recent one).
#define IOT_SHADOW_LUA_RECENT                                                         \
  "local function seen(recent, id)\n"                                                 \
  "  local from = 1\n"                                                                \
  "  while true do\n"                                                                 \
  "    local at = string.find(recent, id, from, true)\n"                              \
  "    if not at then return false end\n"                                             \
  "    if (at - 1) % #id == 0 then return true end\n"                                 \
  "    from = at + 1\n"                                                               \
  "  end\n"                                                                           \
  "end\n"                                                                             \
  "local function remember(recent, id, window)\n"                                     \
  "  if window <= 0 then return '' end\n"                                             \
  "  recent = recent .. id\n"                                                         \
  "  if #recent > window * #id then recent = string.sub(recent, -window * #id) end\n" \
  "  return recent\n"                                                                 \
  "end\n"

// KEYS: shadow hash, dirty zset.
// ARGV: tenant, now ms, max bytes, dedupe window, device id, message digest, then
// field/stamped-value pairs.
// Returns {outcome, version, created}: outcome 0 applied, 1 unchanged, 2 too large,
// 3 duplicate (among the device's recent messages). One HMGET reads the fields and one HSET
// writes the changed ones (a report of ten properties was ~30 calls from Lua, the most expensive
// command of the ingest path); both in chunks, as unpack() has a stack limit.
const std::string kMergeScript = IOT_SHADOW_LUA_STAMP IOT_SHADOW_LUA_RECENT R"lua(
local h = KEYS[1]
local function chunked(cmd, args, size)
  local out = {}
  for i = 1, #args, size do
    local part = redis.call(cmd, h, unpack(args, i, math.min(i + size - 1, #args)))
    if type(part) == 'table' then
      for j = 1, #part do out[#out + 1] = part[j] end
    end
  end
  return out
end
local names = {'v', 'sz', 'm'}
for i = 7, #ARGV, 2 do names[#names + 1] = ARGV[i] end
local cur = chunked('HMGET', names, 1000)
local v = tonumber(cur[1] or '0')
local recent = cur[3] or ''
if seen(recent, ARGV[6]) then return {3, v, 0} end
local created = 0
if v == 0 and redis.call('EXISTS', h) == 0 then created = 1 end
local sz = tonumber(cur[2] or '0')
local writes = {}
local k = 4
for i = 7, #ARGV, 2 do
  local f, nv = ARGV[i], ARGV[i + 1]
  local old = cur[k]
  k = k + 1
  if not old then
    sz = sz + #f + #nv
    writes[#writes + 1] = f
    writes[#writes + 1] = nv
  elseif old ~= nv and stamp(nv) >= stamp(old) then
    sz = sz + #nv - #old
    writes[#writes + 1] = f
    writes[#writes + 1] = nv
  end
end
if #writes == 0 then return {1, v, created} end
if sz > tonumber(ARGV[3]) then return {2, v, created} end
writes[#writes + 1] = 'sz'
writes[#writes + 1] = sz
writes[#writes + 1] = 't'
writes[#writes + 1] = ARGV[1]
writes[#writes + 1] = 'm'
writes[#writes + 1] = remember(recent, ARGV[6], tonumber(ARGV[4]))
chunked('HSET', writes, 2000)
redis.call('HINCRBY', h, 'w', 1)
v = redis.call('HINCRBY', h, 'v', 1)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
return {0, v, created}
)lua";

// KEYS: shadow hash, dirty zset. ARGV: tenant, expected version (-1: any), max bytes, now ms,
// device id, then field/value pairs (empty value: remove). Returns {outcome, version}:
// 0 applied, 2 too large, 4 version conflict.
const std::string kDesiredScript = R"lua(
local h = KEYS[1]
local v = tonumber(redis.call('HGET', h, 'v') or '0')
local expected = tonumber(ARGV[2])
if expected >= 0 and expected ~= v then return {4, v} end
local sz = tonumber(redis.call('HGET', h, 'sz') or '0')
for i = 6, #ARGV, 2 do
  local old = redis.call('HGET', h, ARGV[i])
  if old then sz = sz - #ARGV[i] - #old end
  if ARGV[i + 1] ~= '' then sz = sz + #ARGV[i] + #ARGV[i + 1] end
end
if sz > tonumber(ARGV[3]) then return {2, v} end
for i = 6, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', h, ARGV[i])
  else
    redis.call('HSET', h, ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', h, 'sz', sz, 't', ARGV[1])
redis.call('HINCRBY', h, 'w', 1)
v = redis.call('HINCRBY', h, 'v', 1)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return {0, v}
)lua";

// KEYS: shadow hash, dirty zset. ARGV: tenant, durable version, now ms, device id,
// last property set JSON or '', then field/stamped-value pairs of the durable copy.
// Live fields win unless the durable one is strictly newer. The version becomes at least the
// durable one, and moves on (the device turning dirty) only when the durable copy changed
// something live (a copy the write-behind just wrote changes nothing). Returns the version.
const std::string kRestoreScript = IOT_SHADOW_LUA_STAMP R"lua(
local h = KEYS[1]
local existed = redis.call('EXISTS', h) == 1
local sz = tonumber(redis.call('HGET', h, 'sz') or '0')
local changed = false
for i = 6, #ARGV, 2 do
  local f, nv = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', h, f)
  if not old then
    sz = sz + #f + #nv
    redis.call('HSET', h, f, nv)
    changed = true
  elseif stamp(nv) > stamp(old) then
    sz = sz + #nv - #old
    redis.call('HSET', h, f, nv)
    changed = true
  end
end
if ARGV[5] ~= '' and redis.call('HEXISTS', h, 'ps') == 0 then
  redis.call('HSET', h, 'ps', ARGV[5])
end
local v = tonumber(redis.call('HGET', h, 'v') or '0')
local dv = tonumber(ARGV[2])
if dv > v then v = dv end
if existed and changed then
  v = v + 1
  redis.call('HINCRBY', h, 'w', 1)
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
end
redis.call('HSET', h, 'v', v, 'sz', sz, 't', ARGV[1])
return v
)lua";

// KEYS: dirty zset. ARGV: now ms, lease-until ms, max, shadow key prefix.
// Returns {id1, {hash1...}, id2, {hash2...}, ...}.
const std::string kClaimScript = R"lua(
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', ARGV[4] .. id)
end
return out
)lua";

// KEYS: dirty zset. ARGV: now ms, shadow key prefix, then id/write-seq pairs (write-seq ''
// releases the claim). A device written since its snapshot stays dirty, due now.
const std::string kAckScript = R"lua(
for i = 3, #ARGV, 2 do
  local w = redis.call('HGET', ARGV[2] .. ARGV[i], 'w')
  if ARGV[i + 1] ~= '' and (w == false or w == ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
  else
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  end
end
return 0
)lua";

// KEYS: shadow hash, dirty zset. ARGV: tenant, record JSON, now ms, device id, dedupe window,
// message digest. Returns 0 recorded, 1 duplicate.
const std::string kPropertySetScript = IOT_SHADOW_LUA_RECENT R"lua(
local recent = redis.call('HGET', KEYS[1], 'm') or ''
if seen(recent, ARGV[6]) then return 1 end
redis.call('HSET', KEYS[1], 'ps', ARGV[2], 't', ARGV[1], 'm',
           remember(recent, ARGV[6], tonumber(ARGV[5])))
redis.call('HINCRBY', KEYS[1], 'w', 1)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 0
)lua";

#undef IOT_SHADOW_LUA_STAMP
#undef IOT_SHADOW_LUA_RECENT

absl::Status ReplyError(const common::RedisReply& reply) {
  return absl::InternalError("redis script failed: " + reply.str);
}

int64_t At(const common::RedisReply& reply, size_t i) {
  return i < reply.elements.size() ? reply.elements[i].integer : 0;
}

LiveStore::Outcome OutcomeOf(int64_t code) {
  switch (code) {
    case 0:
      return LiveStore::Outcome::kApplied;
    case 1:
      return LiveStore::Outcome::kUnchanged;
    case 2:
      return LiveStore::Outcome::kTooLarge;
    case 3:
      return LiveStore::Outcome::kDuplicate;
    default:
      return LiveStore::Outcome::kConflict;
  }
}

FieldValues Pairs(const common::RedisReply& flat) {
  FieldValues out;
  out.reserve(flat.elements.size() / 2);
  for (size_t i = 0; i + 1 < flat.elements.size(); i += 2) {
    out.emplace_back(flat.elements[i].str, flat.elements[i + 1].str);
  }
  return out;
}

bool IsNoScript(const common::RedisReply& reply) {
  return reply.is_error() && reply.str.starts_with("NOSCRIPT");
}

}  // namespace

RedisLiveStore::RedisLiveStore(std::shared_ptr<common::RedisClient> redis,
                               size_t max_document_bytes, size_t dedupe_window)
    : redis_(std::move(redis)),
      max_document_bytes_(max_document_bytes),
      dedupe_window_(dedupe_window),
      merge_{&kMergeScript, {}},
      desired_{&kDesiredScript, {}},
      restore_{&kRestoreScript, {}},
      claim_{&kClaimScript, {}},
      ack_{&kAckScript, {}},
      property_set_{&kPropertySetScript, {}} {}

const std::string& RedisLiveStore::MergeScript() { return kMergeScript; }

std::string RedisLiveStore::ShadowKey(const std::string& device_id) {
  return std::string(kShadowPrefix) + device_id;
}

std::string RedisLiveStore::MessageDigest(const std::string& message_id) {
  // 8 bytes of SHA-256: a fixed size the scripts can scan, stable across replicas and restarts.
  return *common::HexDecode(common::Sha256Hex(message_id).substr(0, 16));
}

std::vector<std::string> RedisLiveStore::MergeArgs(const std::string& sha,
                                                   const ReportWrite& report,
                                                   size_t max_document_bytes, int64_t now_ms,
                                                   size_t dedupe_window) {
  std::vector<std::string> args;
  args.reserve(11 + 2 * report.fields.size());
  args.insert(args.end(),
              {"EVALSHA", sha, "2", ShadowKey(report.device_id), std::string(kDirtyKey),
               report.tenant_id, std::to_string(now_ms), std::to_string(max_document_bytes),
               std::to_string(dedupe_window), report.device_id, MessageDigest(report.message_id)});
  for (const auto& [name, value] : report.fields) {
    args.push_back(name);
    args.push_back(value);
  }
  return args;
}

absl::StatusOr<std::string> RedisLiveStore::Sha(Script& script, bool reload) {
  {
    std::lock_guard lock(mu_);
    if (!reload && !script.sha.empty()) {
      return script.sha;
    }
  }
  auto reply = common::CheckReply(redis_->Command({"SCRIPT", "LOAD", *script.text}));
  if (!reply.ok()) {
    return reply.status();
  }
  std::lock_guard lock(mu_);
  script.sha = reply->str;
  return script.sha;
}

absl::StatusOr<common::RedisReply> RedisLiveStore::Eval(Script& script,
                                                        const std::vector<std::string>& keys,
                                                        const std::vector<std::string>& args) {
  for (bool reload : {false, true}) {
    auto sha = Sha(script, reload);
    if (!sha.ok()) {
      return sha.status();
    }
    std::vector<std::string> command = {"EVALSHA", *sha, std::to_string(keys.size())};
    command.insert(command.end(), keys.begin(), keys.end());
    command.insert(command.end(), args.begin(), args.end());
    auto reply = redis_->Command(command);
    if (!reply.ok()) {
      return reply.status();
    }
    if (IsNoScript(*reply)) {
      continue;
    }
    if (reply->is_error()) {
      return ReplyError(*reply);
    }
    return reply;
  }
  return absl::InternalError("redis lost the script twice");
}

absl::StatusOr<std::vector<LiveStore::WriteResult>> RedisLiveStore::MergeReports(
    const std::vector<ReportWrite>& reports) {
  std::vector<WriteResult> results(reports.size());
  std::vector<size_t> pending(reports.size());
  for (size_t i = 0; i < reports.size(); ++i) {
    pending[i] = i;
  }
  for (bool reload : {false, true}) {
    auto sha = Sha(merge_, reload);
    if (!sha.ok()) {
      return sha.status();
    }
    const int64_t now = NowMs();
    std::vector<std::vector<std::string>> commands;
    commands.reserve(pending.size());
    for (size_t i : pending) {
      commands.push_back(MergeArgs(*sha, reports[i], max_document_bytes_, now, dedupe_window_));
    }
    auto replies = redis_->Pipeline(commands);
    if (!replies.ok()) {
      return replies.status();
    }
    std::vector<size_t> retry;
    for (size_t k = 0; k < pending.size(); ++k) {
      const common::RedisReply& reply = (*replies)[k];
      if (IsNoScript(reply)) {
        retry.push_back(pending[k]);
        continue;
      }
      if (reply.is_error()) {
        return ReplyError(reply);
      }
      results[pending[k]] = WriteResult{.outcome = OutcomeOf(At(reply, 0)),
                                        .version = At(reply, 1),
                                        .created = At(reply, 2) == 1};
    }
    if (retry.empty()) {
      return results;
    }
    pending = std::move(retry);
  }
  return absl::InternalError("redis lost the merge script twice");
}

absl::StatusOr<LiveStore::WriteResult> RedisLiveStore::ApplyDesired(const std::string& device_id,
                                                                    const std::string& tenant_id,
                                                                    int64_t expected,
                                                                    const FieldValues& fields) {
  std::vector<std::string> args = {tenant_id, std::to_string(expected),
                                   std::to_string(max_document_bytes_), std::to_string(NowMs()),
                                   device_id};
  for (const auto& [name, value] : fields) {
    args.push_back(name);
    args.push_back(value);
  }
  auto reply = Eval(desired_, {ShadowKey(device_id), std::string(kDirtyKey)}, args);
  if (!reply.ok()) {
    return reply.status();
  }
  return WriteResult{.outcome = OutcomeOf(At(*reply, 0)), .version = At(*reply, 1)};
}

absl::StatusOr<DeviceShadow> RedisLiveStore::Load(const std::string& device_id) {
  auto reply = common::CheckReply(redis_->Command({"HGETALL", ShadowKey(device_id)}));
  if (!reply.ok()) {
    return reply.status();
  }
  return DecodeHash(device_id, Pairs(*reply));
}

absl::Status RedisLiveStore::Restore(const DeviceShadow& durable) {
  std::vector<std::string> args = {
      durable.tenant_id, std::to_string(durable.version), std::to_string(NowMs()),
      durable.device_id,
      durable.last_property_set ? PropertySetToJson(*durable.last_property_set).dump() : ""};
  FieldValues fields;
  for (const auto& [service_id, service] : durable.services) {
    AppendSideFields(service_id, service.reported, false, fields);
    AppendSideFields(service_id, service.desired, true, fields);
  }
  for (auto& [name, value] : fields) {
    args.push_back(std::move(name));
    args.push_back(std::move(value));
  }
  return Eval(restore_, {ShadowKey(durable.device_id), std::string(kDirtyKey)}, args).status();
}

absl::StatusOr<bool> RedisLiveStore::RecordPropertySet(const std::string& device_id,
                                                       const std::string& tenant_id,
                                                       const std::string& message_id,
                                                       const PropertySetRecord& record) {
  auto reply = Eval(property_set_, {ShadowKey(device_id), std::string(kDirtyKey)},
                    {tenant_id, PropertySetToJson(record).dump(), std::to_string(NowMs()),
                     device_id, std::to_string(dedupe_window_), MessageDigest(message_id)});
  if (!reply.ok()) {
    return reply.status();
  }
  return reply->integer == 0;
}

absl::StatusOr<bool> RedisLiveStore::IsDone(const std::string& key) {
  auto reply = common::CheckReply(redis_->Command({"EXISTS", std::string(kOncePrefix) + key}));
  if (!reply.ok()) {
    return reply.status();
  }
  return reply->integer == 1;
}

absl::Status RedisLiveStore::MarkDone(const std::string& key, std::chrono::seconds ttl) {
  return common::CheckReply(redis_->Command({"SET", std::string(kOncePrefix) + key, "1", "EX",
                                             std::to_string(ttl.count())}))
      .status();
}

absl::StatusOr<std::vector<DeviceShadow>> RedisLiveStore::ClaimDirty(
    size_t max, std::chrono::milliseconds lease) {
  const int64_t now = NowMs();
  auto reply = Eval(claim_, {std::string(kDirtyKey)},
                    {std::to_string(now), std::to_string(now + lease.count()), std::to_string(max),
                     std::string(kShadowPrefix)});
  if (!reply.ok()) {
    return reply.status();
  }
  std::vector<DeviceShadow> out;
  for (size_t i = 0; i + 1 < reply->elements.size(); i += 2) {
    out.push_back(DecodeHash(reply->elements[i].str, Pairs(reply->elements[i + 1])));
  }
  return out;
}

absl::Status RedisLiveStore::AckFlushed(const std::vector<DeviceShadow>& flushed) {
  if (flushed.empty()) {
    return absl::OkStatus();
  }
  std::vector<std::string> args = {std::to_string(NowMs()), std::string(kShadowPrefix)};
  for (const DeviceShadow& shadow : flushed) {
    args.push_back(shadow.device_id);
    args.push_back(std::to_string(shadow.write_seq));
  }
  return Eval(ack_, {std::string(kDirtyKey)}, args).status();
}

absl::Status RedisLiveStore::ReleaseClaims(const std::vector<DeviceShadow>& claimed) {
  if (claimed.empty()) {
    return absl::OkStatus();
  }
  std::vector<std::string> args = {std::to_string(NowMs()), std::string(kShadowPrefix)};
  for (const DeviceShadow& shadow : claimed) {
    args.push_back(shadow.device_id);
    args.emplace_back();
  }
  return Eval(ack_, {std::string(kDirtyKey)}, args).status();
}

absl::StatusOr<bool> RedisLiveStore::HasMarker() {
  auto reply = common::CheckReply(redis_->Command({"EXISTS", std::string(kMarkerKey)}));
  if (!reply.ok()) {
    return reply.status();
  }
  return reply->integer == 1;
}

absl::Status RedisLiveStore::SetMarker() {
  auto reply = common::CheckReply(
      redis_->Command({"SET", std::string(kMarkerKey), std::to_string(NowMs())}));
  if (!reply.ok()) {
    return reply.status();
  }
  return UnlockRebuild();
}

absl::Status RedisLiveStore::UnlockRebuild() {
  return common::CheckReply(redis_->Command({"DEL", std::string(kRebuildLockKey)})).status();
}

absl::StatusOr<bool> RedisLiveStore::TryLockRebuild(std::chrono::milliseconds ttl) {
  auto reply = common::CheckReply(redis_->Command(
      {"SET", std::string(kRebuildLockKey), "1", "NX", "PX", std::to_string(ttl.count())}));
  if (!reply.ok()) {
    return reply.status();
  }
  return !reply->is_nil();
}

}  // namespace iot::shadow
