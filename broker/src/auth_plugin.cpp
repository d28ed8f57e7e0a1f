#include "auth_plugin.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <iterator>
#include <nlohmann/json.hpp>

#include "alink_topics.h"
#include "client_id.h"
#include "topic_rules.h"

namespace iot::broker {
namespace {

constexpr int kPresenceQos = 1;
constexpr int kDownResultQos = 1;
/// `tm:dev:{id}` field `dialect` (docs/redis-projection.md): absent or huawei = IoTDA.
constexpr std::string_view kAlinkDialect = "alink";
constexpr std::string_view kHuaweiDialect = "huawei";
/// Refused connects are logged one by one up to this many a second; a flood is counted instead.
constexpr int kRefusalLinesPerSecond = 20;
/// Source addresses tracked by the per-address connect bucket (idle ones make room).
constexpr size_t kMaxTrackedAddresses = 100'000;

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  });
  return out;
}

/// Appends `text` as a JSON string. Text is UTF-8 already (mosquitto validates client ids and
/// usernames; ids from the projection are the platform's).
void AppendJsonString(std::string& out, std::string_view text) {
  out.push_back('"');
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<unsigned>(c));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

}  // namespace

std::string FormatIsoTime(std::chrono::system_clock::time_point time) {
  const auto ms = std::chrono::time_point_cast<std::chrono::milliseconds>(time);
  const std::time_t seconds = std::chrono::system_clock::to_time_t(ms);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  const auto millis = ms.time_since_epoch().count() % 1000;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, millis);
}

AuthPlugin::AuthPlugin(PluginConfig config, common::SecretBox secret_box,
                       std::shared_ptr<DeviceDirectory> directory, BrokerApi& broker,
                       SystemClock clock)
    : config_(std::move(config)),
      secret_box_(std::move(secret_box)),
      directory_(std::move(directory)),
      broker_(broker),
      clock_(clock ? std::move(clock)
                   : SystemClock([] { return std::chrono::system_clock::now(); })),
      id_nonce_(common::HexEncode(common::RandomBytes(8))),
      address_limiter_(config_.connect_rate_per_address, kMaxTrackedAddresses, {},
                       config_.connect_burst_per_address),
      lookup_limiter_(config_.lookup_rate, 1, {}, config_.lookup_rate),
      stats_since_(std::chrono::steady_clock::now()) {
  for (const auto& account : config_.service_accounts) {
    service_accounts_.emplace(account.name, &account);
  }
}

// ---- Authentication ----

bool AuthPlugin::OnBasicAuth(const ConnectRequest& request) {
  connect_charged_ = false;
  if (!request.username || request.username->empty()) {
    Refuse(request, "no username");
    return false;
  }
  const std::string& username = *request.username;
  if (reloading_ && !sessions_.contains(request.session)) {
    // A persistent session without a connection: nothing to re-check until it reconnects (and
    // authenticates like any new connection). Accepting keeps mosquitto's session as it is.
    return true;
  }
  if (service_accounts_.contains(username)) {
    return AuthenticateService(request, username);
  }
  if (IsAlinkClientId(request.client_id)) {
    return AuthenticateAlink(request, username);
  }
  return AuthenticateDevice(request, username);
}

void AuthPlugin::Refuse(const ConnectRequest& request, std::string_view why) {
  ++stats_.refused;
  stats_.refused_alink += IsAlinkClientId(request.client_id) ? 1U : 0U;
  if (!connect_charged_ && !reloading_) {
    address_limiter_.Allow(request.address);
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - log_window_ >= std::chrono::seconds(1)) {
    log_window_ = now;
    log_lines_ = 0;
  }
  if (log_lines_++ >= kRefusalLinesPerSecond) {
    ++stats_.lines_suppressed;
    return;
  }
  Log(LogLevel::kNotice,
      fmt::format("refused client '{}' from {} (username '{}'): {}", request.client_id,
                  request.address, request.username.value_or(""), why));
}

std::optional<Lookup> AuthPlugin::FindDevice(const ConnectRequest& request,
                                             const std::string& device_id) {
  if (auto known = directory_->FindInMemory(device_id)) {
    stats_.unknown_from_memory += known->status == LookupStatus::kNotFound ? 1U : 0U;
    return known;
  }
  if (!reloading_ && !directory_->Holds(device_id)) {
    // A Redis read on the broker thread, which every client waits for, for an id not known to
    // exist: a source address gets a bounded share of them (and of refusals), and all addresses
    // together a bounded number. A held device whose record needs confirming (the subscription
    // was lost) is not limited.
    connect_charged_ = true;
    if (!address_limiter_.Allow(request.address)) {
      ++stats_.refused_per_address;
      Refuse(request, fmt::format("device not held in memory and over the limit of {} connects/s "
                                  "from {} that fail or need Redis (connect_rate_per_address)",
                                  config_.connect_rate_per_address, request.address));
      return std::nullopt;
    }
    if (!lookup_limiter_.Allow("")) {
      ++stats_.refused_lookup_budget;
      Refuse(request, fmt::format("device not held in memory and over the broker's {} Redis "
                                  "lookups/s (lookup_rate)",
                                  config_.lookup_rate));
      return std::nullopt;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  Lookup lookup = directory_->Find(device_id);
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);
  ++stats_.lookups;
  stats_.lookup_total += took;
  stats_.lookup_max = std::max(stats_.lookup_max, took);
  return lookup;
}

void AuthPlugin::LogConnectStats() {
  const auto now = std::chrono::steady_clock::now();
  if (now - stats_since_ < config_.stats_interval) {
    return;
  }
  const auto seconds = std::chrono::duration<double>(now - stats_since_).count();
  stats_since_ = now;
  if (stats_.refused == 0 && stats_.lookups == 0) {
    return;
  }
  Log(LogLevel::kNotice,
      fmt::format("connect guard, last {:.0f} s: {} connects refused ({} in the Alink form, {} "
                  "unknown devices answered from memory, {} over the per-address limit, {} over "
                  "the lookup budget, {} log lines suppressed); {} Redis lookups on the broker "
                  "thread, mean {} us, max {} us",
                  seconds, stats_.refused, stats_.refused_alink, stats_.unknown_from_memory,
                  stats_.refused_per_address, stats_.refused_lookup_budget, stats_.lines_suppressed,
                  stats_.lookups,
                  stats_.lookups == 0
                      ? 0
                      : stats_.lookup_total.count() / static_cast<int64_t>(stats_.lookups),
                  stats_.lookup_max.count()));
  stats_ = ConnectStats{};
}

bool AuthPlugin::AuthenticateService(const ConnectRequest& request, const std::string& username) {
  const ServiceAccount& account = *service_accounts_.at(username);
  if (!request.password || !VerifyServiceAccountPassword(account, *request.password)) {
    Refuse(request, "bad service account password");
    return false;
  }
  sessions_[request.session] = Session{.role = Role::kService,
                                       .identity = username,
                                       .client_id = request.client_id,
                                       .address = request.address,
                                       .record = {},
                                       .alink = std::nullopt,
                                       .closing = false};
  Log(LogLevel::kInfo, fmt::format("service account '{}' connected as '{}' from {}", username,
                                   request.client_id, request.address));
  return true;
}

bool AuthPlugin::AuthenticateDevice(const ConnectRequest& request, const std::string& username) {
  const auto parsed = ParseClientId(request.client_id);
  if (!parsed) {
    Refuse(request, "client id is not {device_id}_0_{0|1}_{YYYYMMDDHH}");
    return false;
  }
  if (parsed->device_id != username) {
    Refuse(request, "username is not the client id's device id");
    return false;
  }
  if (parsed->sign_type == 1 &&
      !TimestampWithinSkew(parsed->hour_start, clock_(), config_.time_skew)) {
    Refuse(request, fmt::format("timestamp {} is more than {} s from the broker's clock",
                                parsed->timestamp, config_.time_skew.count()));
    return false;
  }
  bool accept_as_is = false;
  auto record = ConnectingDevice(request, parsed->device_id, &accept_as_is);
  if (!record) {
    return accept_as_is;
  }
  if (!record->dialect.empty() && record->dialect != kHuaweiDialect) {
    Refuse(request, fmt::format("device is of the {} dialect: it connects with a client id "
                                "<cid>|k=v,...| and the username {{deviceName}}&{{productKey}}",
                                record->dialect));
    return false;
  }

  const bool has_password = request.password && !request.password->empty();
  if (!has_password && request.certificate_fingerprint) {
    if (record->fingerprint.empty() ||
        !common::ConstantTimeEquals(Lower(*request.certificate_fingerprint),
                                    Lower(record->fingerprint))) {
      Refuse(request, "client certificate is not the device's registered certificate");
      return false;
    }
  } else {
    if (!has_password) {
      Refuse(request, "no password");
      return false;
    }
    const auto secret = DeviceSecret(request, parsed->device_id, *record);
    if (!secret) {
      return false;
    }
    const std::string expected = common::HmacSha256Hex(parsed->timestamp, *secret);
    if (!common::ConstantTimeEquals(Lower(*request.password), expected)) {
      Refuse(request, "bad password");
      return false;
    }
  }
  RegisterDevice(request, parsed->device_id, *std::move(record));
  return true;
}

bool AuthPlugin::AuthenticateAlink(const ConnectRequest& request, const std::string& username) {
  const auto client_id = ParseAlinkClientId(request.client_id);
  if (!client_id.ok()) {
    Refuse(request, fmt::format("Alink client id: {}", std::string(client_id.status().message())));
    return false;
  }
  if (client_id->securemode == "-2") {
    Refuse(request,
           "Alink securemode=-2 (token login after dynamic registration) is not "
           "supported: the device must sign with its deviceSecret");
    return false;
  }
  if (client_id->auth_type == "register" || client_id->auth_type == "regnwl") {
    Refuse(request, fmt::format("Alink authType={} (dynamic registration) is not supported",
                                client_id->auth_type));
    return false;
  }
  auto name = ParseAlinkUsername(username);
  if (!name.ok()) {
    Refuse(request, fmt::format("Alink username: {}", std::string(name.status().message())));
    return false;
  }
  const std::string device_id = AlinkDeviceId(*name);
  bool accept_as_is = false;
  auto record = ConnectingDevice(request, device_id, &accept_as_is);
  if (!record) {
    return accept_as_is;
  }
  if (record->dialect != kAlinkDialect) {
    Refuse(request,
           "device is not of the alink dialect: it connects with the IoTDA client id "
           "{device_id}_0_{0|1}_{YYYYMMDDHH}");
    return false;
  }
  if (record->product_id != name->product_key || record->node_id != name->device_name) {
    // {pk}_{dn} is ambiguous when either contains '_': the record says which device it is.
    Refuse(request, fmt::format("device '{}' is productKey '{}', deviceName '{}'", device_id,
                                record->product_id, record->node_id));
    return false;
  }
  if (!request.password || request.password->empty()) {
    Refuse(request, "no password (certificate login is for IoTDA devices only)");
    return false;
  }
  const auto secret = DeviceSecret(request, device_id, *record);
  if (!secret) {
    return false;
  }
  if (!VerifyAlinkPassword(*request.password, *secret, AlinkSignContent(*client_id, *name))) {
    Refuse(request, fmt::format("bad password (signmethod {}, {} hex characters)",
                                SignMethodName(client_id->sign_method), request.password->size()));
    return false;
  }
  RegisterDevice(request, device_id, *std::move(record), *std::move(name));
  return true;
}

std::optional<DeviceRecord> AuthPlugin::ConnectingDevice(const ConnectRequest& request,
                                                         const std::string& device_id,
                                                         bool* accept_as_is) {
  auto found = FindDevice(request, device_id);
  if (!found) {
    return std::nullopt;
  }
  Lookup& lookup = *found;
  if (lookup.status == LookupStatus::kUnavailable && reloading_) {
    // Re-authentication of a connected device on reload: a Redis outage is no reason to drop
    // it (the change watcher re-checks it once Redis is back).
    *accept_as_is = true;
    return std::nullopt;
  }
  if (lookup.status == LookupStatus::kUnavailable) {
    Refuse(request, "credential store (Redis) unavailable and the device is not cached");
    return std::nullopt;
  }
  if (lookup.status == LookupStatus::kNotFound || !lookup.record) {
    Refuse(request, "unknown device");
    return std::nullopt;
  }
  if (lookup.record->frozen) {
    Refuse(request, "device is frozen");
    return std::nullopt;
  }
  if (lookup.stale) {
    Log(LogLevel::kWarning, fmt::format("device '{}' is checked against a stale cache entry "
                                        "(Redis unreachable)",
                                        device_id));
  }
  return std::move(lookup.record);
}

std::optional<std::string> AuthPlugin::DeviceSecret(const ConnectRequest& request,
                                                    const std::string& device_id,
                                                    const DeviceRecord& record) {
  if (record.sealed_secret.empty()) {
    Refuse(request, "device has no secret (certificate device)");
    return std::nullopt;
  }
  if (record.secret) {
    return record.secret;
  }
  auto secret = secret_box_.Open(record.sealed_secret, device_id);
  if (!secret.ok()) {
    Log(LogLevel::kError,
        fmt::format("cannot open the sealed secret of device '{}' (wrong IOT_SECRET_KEY?): {}",
                    device_id, std::string(secret.status().message())));
    Refuse(request, "device secret unreadable");
    return std::nullopt;
  }
  return *std::move(secret);
}

void AuthPlugin::RegisterDevice(const ConnectRequest& request, const std::string& device_id,
                                DeviceRecord record, std::optional<AlinkName> alink) {
  // Mosquitto re-authenticates every connected client when it reloads its configuration
  // (SIGHUP): the same connection again is not a new one.
  if (const auto current = device_sessions_.find(device_id);
      current != device_sessions_.end() && current->second == request.session) {
    sessions_.at(request.session).record = std::move(record);
    return;
  }
  // One connection per device: a new one replaces the old, whose "disconnected" goes first.
  if (device_sessions_.contains(device_id)) {
    EndDeviceSession(device_id, "replaced", /*kick=*/true);
  }
  Session& session = sessions_[request.session];
  session = Session{.role = Role::kDevice,
                    .identity = device_id,
                    .client_id = request.client_id,
                    .address = request.address,
                    .record = std::move(record),
                    .alink = std::move(alink),
                    .closing = false};
  device_sessions_[device_id] = request.session;
  {
    std::lock_guard lock(shared_mutex_);
    connected_.insert(device_id);
  }
  PublishPresence("connected", device_id, session, "connect");
}

void AuthPlugin::EndDeviceSession(const std::string& device_id, std::string_view reason,
                                  bool kick) {
  const auto current = device_sessions_.find(device_id);
  if (current == device_sessions_.end()) {
    return;
  }
  const SessionKey key = current->second;
  device_sessions_.erase(current);
  {
    std::lock_guard lock(shared_mutex_);
    connected_.erase(device_id);
  }
  const auto it = sessions_.find(key);
  if (it == sessions_.end()) {
    return;
  }
  Session& session = it->second;
  session.closing = true;
  closing_.push_back(key);
  PublishPresence("disconnected", device_id, session, reason);
  if (kick) {
    // Re-enters OnDisconnect for this session, which is already closing and so ignored.
    const std::string client_id = session.client_id;
    Log(LogLevel::kNotice,
        fmt::format("disconnecting device '{}' (client '{}'): {}", device_id, client_id, reason));
    broker_.Kick(client_id);
  }
}

void AuthPlugin::OnDisconnect(SessionKey key) {
  const auto it = sessions_.find(key);
  if (it == sessions_.end() || it->second.closing) {
    return;
  }
  if (it->second.role == Role::kDevice) {
    const auto current = device_sessions_.find(it->second.identity);
    if (current != device_sessions_.end() && current->second == key) {
      EndDeviceSession(it->second.identity, "connection_closed", /*kick=*/false);
      return;
    }
  }
  it->second.closing = true;
  closing_.push_back(key);
}

// ---- Authorisation ----

namespace {

/// The device's topics in its dialect: Alink (alink_topics.h) or IoTDA (topic_rules.h).
bool MayPublish(const std::string& device_id, const std::optional<AlinkName>& alink,
                std::string_view topic) {
  return alink ? AlinkMayPublish(alink->product_key, alink->device_name, topic)
               : DeviceMayPublish(device_id, topic);
}

bool MayReceive(const std::string& device_id, const std::optional<AlinkName>& alink,
                std::string_view topic) {
  return alink ? AlinkMayReceive(alink->product_key, alink->device_name, topic)
               : DeviceMayReceive(device_id, topic);
}

bool MaySubscribe(const std::string& device_id, const std::optional<AlinkName>& alink,
                  std::string_view filter) {
  return alink ? AlinkMaySubscribe(alink->product_key, alink->device_name, filter)
               : DeviceMaySubscribe(device_id, filter);
}

std::optional<std::string> RelayTopic(const std::string& device_id,
                                      const std::optional<AlinkName>& alink, std::string_view topic,
                                      uint32_t partitions) {
  return alink ? AlinkUplinkRelayTopic(device_id, alink->product_key, alink->device_name, topic,
                                       partitions)
               : UplinkRelayTopic(device_id, topic, partitions);
}

/// A device as identified by the user name it authenticated with, for an offline or forgotten
/// connection: `{deviceName}&{productKey}` is an Alink device, anything else an IoTDA device id.
std::pair<std::string, std::optional<AlinkName>> DeviceOfUsername(std::string_view username) {
  if (auto name = ParseAlinkUsername(username); name.ok()) {
    std::string device_id = AlinkDeviceId(*name);
    return {std::move(device_id), *std::move(name)};
  }
  return {std::string(username), std::nullopt};
}

}  // namespace

bool AuthPlugin::OnAclCheck(SessionKey key, Access access, std::string_view topic,
                            std::string_view username, const AclMessage* message) {
  const auto it = sessions_.find(key);
  if (it == sessions_.end()) {
    if (username.empty() || service_accounts_.contains(std::string(username))) {
      // An offline persistent session of a service account: only queueing (read) is checked
      // for it. Everything else needs a live, authenticated connection.
      return access == Access::kRead && !username.empty() && !IsDownlinkTopic(topic);
    }
    const auto [device_id, alink] = DeviceOfUsername(username);
    // A write without a connection the plugin knows is a delayed will (Will Delay Interval)
    // of a device that authenticated before (mosquitto clears the will of a connection that
    // did not): relayed like the others.
    if (access == Access::kWrite && message != nullptr && MayPublish(device_id, alink, topic)) {
      RelayWill(device_id, alink, topic, *message);
      return false;
    }
    // An offline persistent session: only queueing (read) is checked for it, by the identity it
    // authenticated with.
    return access == Access::kRead && MayReceive(device_id, alink, topic);
  }
  const Session& session = it->second;
  if (session.role == Role::kService) {
    // Internal downlink messages are relayed by the plugin, never delivered as they are.
    return !(access == Access::kRead && IsDownlinkTopic(topic));
  }
  switch (access) {
    case Access::kWrite:
      if (session.closing && message != nullptr) {
        // Mosquitto checks a will after the disconnect event: the connection is closing.
        if (MayPublish(session.identity, session.alink, topic)) {
          RelayWill(session.identity, session.alink, topic, *message);
        }
        return false;
      }
      return MayPublish(session.identity, session.alink, topic);
    case Access::kRead:
      return MayReceive(session.identity, session.alink, topic);
    case Access::kSubscribe:
      return MaySubscribe(session.identity, session.alink, topic);
    case Access::kUnsubscribe:
      return true;
  }
  return false;
}

// ---- Downlink relay ----

MessageVerdict AuthPlugin::OnMessage(SessionKey key, std::string_view topic,
                                     std::string_view payload, int qos, std::string* deliver_as,
                                     std::string* message_id, bool* retain) {
  const auto it = sessions_.find(key);
  if (!IsDownlinkTopic(topic)) {
    if (retain != nullptr && (it == sessions_.end() || it->second.role == Role::kDevice)) {
      // Stored retained, a device's message would be replayed to every new subscriber of its
      // uplink partition (the gateways, at each hand-over) and could fill the broker.
      *retain = false;
    }
    if (deliver_as != nullptr && it != sessions_.end() && it->second.role == Role::kDevice) {
      // The ACL check allowed the publish, so the topic is the device's own.
      *deliver_as =
          RelayTopic(it->second.identity, it->second.alink, topic, config_.uplink_partitions)
              .value_or("");
      if (message_id != nullptr && !deliver_as->empty()) {
        *message_id = NextMessageId();
      }
    }
    return MessageVerdict::kPass;
  }
  if (it == sessions_.end() || it->second.role != Role::kService) {
    return MessageVerdict::kDeny;
  }
  auto down = ParseDownlinkTopic(topic);
  const bool alink_down = !down;
  if (alink_down) {
    down = ParseAlinkDownlinkTopic(topic);
  }
  if (!down) {
    Log(LogLevel::kWarning, fmt::format("dropped malformed downlink topic '{}' from '{}'", topic,
                                        it->second.client_id));
    return MessageVerdict::kDeny;
  }
  const auto current = device_sessions_.find(down->device_id);
  if (current == device_sessions_.end()) {
    PublishDownResult(down->device_id, down->device_topic, "offline", "");
    return MessageVerdict::kDeny;
  }
  const Session& device = sessions_.at(current->second);
  const std::string client_id = device.client_id;
  if (alink_down != device.alink.has_value() ||
      !MayReceive(device.identity, device.alink, down->device_topic)) {
    // An IoTDA topic for an Alink device or the reverse, or (`{pk}_{dn}` being ambiguous when
    // either contains '_') another pair's topic: the device could not use it.
    Log(LogLevel::kWarning,
        fmt::format("dropped downlink '{}' from '{}': not a topic of device '{}' ({} dialect)",
                    topic, it->second.client_id, down->device_id,
                    device.alink ? kAlinkDialect : kHuaweiDialect));
    PublishDownResult(down->device_id, down->device_topic, "error", client_id);
    return MessageVerdict::kDeny;
  }
  if (!broker_.Publish(client_id, down->device_topic, payload, qos)) {
    PublishDownResult(down->device_id, down->device_topic, "error", client_id);
    return MessageVerdict::kDeny;
  }
  PublishDownResult(down->device_id, down->device_topic, "relayed", client_id);
  return MessageVerdict::kPass;
}

// ---- Presence ----

void AuthPlugin::PublishPresence(std::string_view event, const std::string& device_id,
                                 const Session& session, std::string_view reason) {
  // Written directly rather than through nlohmann::json: two events per connection made the
  // JSON objects a noticeable share of the broker's CPU in connect storms.
  const std::string time = FormatIsoTime(clock_());
  std::string text;
  text.reserve(256);
  const std::pair<std::string_view, std::string_view> fields[] = {
      {"event", event},
      {"device_id", device_id},
      {"client_id", session.client_id},
      {"time", time},
      {"reason", reason},
      {"client_address", session.address},
      {"tenant_id", session.record.tenant_id},
      {"product_id", session.record.product_id},
      {"node_id", session.record.node_id},
  };
  text.push_back('{');
  for (const auto& [name, value] : fields) {
    AppendJsonString(text, name);
    text.push_back(':');
    AppendJsonString(text, value);
    text.push_back(',');
  }
  fmt::format_to(std::back_inserter(text), "\"seq\":{}}}", ++presence_seq_);
  // One id for both copies: it names the event, whichever topic a consumer reads it from.
  const UserProperties id = {{std::string(kMessageIdProperty), NextMessageId()}};
  for (const std::string& topic :
       {std::string(kPresencePrefix) + device_id,
        PartitionedPresenceTopic(device_id, config_.uplink_partitions)}) {
    if (!broker_.Publish("", topic, text, kPresenceQos, /*retain=*/false, id)) {
      Log(LogLevel::kError,
          fmt::format("cannot publish presence {} of '{}' on {}", event, device_id, topic));
    }
  }
}

std::string AuthPlugin::NextMessageId() {
  return fmt::format("{}-{}", id_nonce_, ++next_message_id_);
}

void AuthPlugin::RelayWill(const std::string& device_id, const std::optional<AlinkName>& alink,
                           std::string_view topic, const AclMessage& message) {
  const auto relay = RelayTopic(device_id, alink, topic, config_.uplink_partitions);
  if (!relay) {
    return;
  }
  const bool sent = broker_.Publish("", *relay, message.payload, message.qos, /*retain=*/false,
                                    {{std::string(kMessageIdProperty), NextMessageId()}});
  Log(sent ? LogLevel::kInfo : LogLevel::kError,
      fmt::format("{} the will of device '{}' on {}", sent ? "relayed" : "could not relay",
                  device_id, topic));
}

void AuthPlugin::PublishDownResult(const std::string& device_id, std::string_view device_topic,
                                   std::string_view status, const std::string& client_id) {
  nlohmann::json body = {
      {"device_id", device_id},
      {"topic", device_topic},
      {"status", status},
      {"time", FormatIsoTime(clock_())},
  };
  if (!client_id.empty()) {
    body["client_id"] = client_id;
  }
  std::string topic(kDownResultPrefix);
  topic.append(device_id);
  broker_.Publish("", topic, body.dump(), kDownResultQos);
}

// ---- Frozen / deleted devices ----

void AuthPlugin::OnTick() {
  reloading_ = false;
  LogConnectStats();
  if (!partitions_announced_) {
    partitions_announced_ = broker_.Publish("", std::string(kPartitionsTopic),
                                            std::to_string(config_.uplink_partitions), 1,
                                            /*retain=*/true);
  }
  std::vector<std::pair<std::string, std::string>> kicks;
  {
    std::lock_guard lock(shared_mutex_);
    kicks.swap(pending_kicks_);
  }
  for (const auto& [device_id, reason] : kicks) {
    EndDeviceSession(device_id, reason, /*kick=*/true);
  }
  for (const SessionKey key : closing_) {
    const auto it = sessions_.find(key);
    if (it != sessions_.end() && it->second.closing) {
      sessions_.erase(it);
    }
  }
  closing_.clear();
}

void AuthPlugin::OnReload() {
  reloading_ = true;
  Log(LogLevel::kInfo, "configuration reload: re-authenticating connected clients");
}

void AuthPlugin::QueueKick(const std::string& device_id, std::string reason) {
  std::lock_guard lock(shared_mutex_);
  if (connected_.contains(device_id)) {
    pending_kicks_.emplace_back(device_id, std::move(reason));
  }
}

void AuthPlugin::ApplyRefresh(const RefreshResult& result) {
  for (const auto& device : result.devices) {
    if (device.record && device.record->frozen) {
      QueueKick(device.device_id, "frozen");
    } else if (!device.record && result.projection_ready) {
      QueueKick(device.device_id, "deleted");
    }
  }
}

void AuthPlugin::OnDeviceChanged(const std::string& device_id) {
  bool connected = false;
  {
    std::lock_guard lock(shared_mutex_);
    connected = connected_.contains(device_id);
  }
  if (auto result = directory_->Reload(device_id, /*force=*/connected)) {
    ApplyRefresh(*result);
  }
}

void AuthPlugin::OnSubscription(bool live) { directory_->SetLive(live); }

void AuthPlugin::Resync(bool after_subscribe) {
  std::vector<std::string> connected;
  {
    std::lock_guard lock(shared_mutex_);
    connected.assign(connected_.begin(), connected_.end());
  }
  const auto start = std::chrono::steady_clock::now();
  const auto result = directory_->Resync(connected);
  if (!result) {
    Log(LogLevel::kWarning,
        "credential projection: Redis failed during the resync; devices not "
        "re-read are checked against Redis again when they connect");
    return;
  }
  ApplyRefresh(*result);
  if (after_subscribe) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    Log(LogLevel::kInfo,
        fmt::format("credential projection loaded: {} devices in {} ms{}", directory_->size(), ms,
                    directory_->complete() ? ""
                                           : " (capacity reached: others are read from Redis "
                                             "when they connect)"));
  }
}

size_t AuthPlugin::connected_devices() const {
  std::lock_guard lock(shared_mutex_);
  return connected_.size();
}

}  // namespace iot::broker
