#include "iot/common/mqtt_packets.h"

#include "absl/strings/str_cat.h"

namespace iot::common::mqtt {
namespace {

// Property identifiers (MQTT 5 §2.2.2.2) this code reads or writes.
constexpr uint8_t kSessionExpiry = 0x11;
constexpr uint8_t kAssignedClientId = 0x12;
constexpr uint8_t kServerKeepalive = 0x13;
constexpr uint8_t kReasonString = 0x1F;
constexpr uint8_t kReceiveMaximum = 0x21;
constexpr uint8_t kTopicAlias = 0x23;
constexpr uint8_t kUserProperty = 0x26;

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError("malformed MQTT packet: " + std::string(what));
}

// ---- Writing ----

void PutU16(std::string& out, uint16_t value) {
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value & 0xFF));
}

void PutU32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((value >> shift) & 0xFF));
  }
}

void PutVarint(std::string& out, size_t value) {
  do {
    auto byte = static_cast<uint8_t>(value % 128);
    value /= 128;
    if (value > 0) {
      byte |= 0x80;
    }
    out.push_back(static_cast<char>(byte));
  } while (value > 0);
}

void PutString(std::string& out, std::string_view text) {
  PutU16(out, static_cast<uint16_t>(text.size()));
  out.append(text);
}

/// Fixed header (type, flags, remaining length) followed by `rest`.
std::string Frame(PacketType type, uint8_t flags, std::string_view rest) {
  std::string out;
  out.reserve(rest.size() + 5);
  out.push_back(static_cast<char>((static_cast<uint8_t>(type) << 4) | (flags & 0x0F)));
  PutVarint(out, rest.size());
  out.append(rest);
  return out;
}

/// Properties `props` preceded by their length.
void PutProperties(std::string& out, std::string_view props) {
  PutVarint(out, props.size());
  out.append(props);
}

void PutUserProperties(std::string& props, const UserProperties& user) {
  for (const auto& [name, value] : user) {
    props.push_back(static_cast<char>(kUserProperty));
    PutString(props, name);
    PutString(props, value);
  }
}

// ---- Reading ----

struct Cursor {
  std::string_view data;
  size_t pos = 0;

  [[nodiscard]] size_t left() const { return data.size() - pos; }
  bool U8(uint8_t& out) {
    if (left() < 1) {
      return false;
    }
    out = static_cast<uint8_t>(data[pos++]);
    return true;
  }
  bool U16(uint16_t& out) {
    if (left() < 2) {
      return false;
    }
    out = static_cast<uint16_t>((static_cast<uint8_t>(data[pos]) << 8) |
                                static_cast<uint8_t>(data[pos + 1]));
    pos += 2;
    return true;
  }
  bool U32(uint32_t& out) {
    if (left() < 4) {
      return false;
    }
    out = 0;
    for (int i = 0; i < 4; ++i) {
      out = (out << 8) | static_cast<uint8_t>(data[pos++]);
    }
    return true;
  }
  bool Varint(size_t& out) {
    out = 0;
    size_t multiplier = 1;
    for (int i = 0; i < 4; ++i) {
      uint8_t byte = 0;
      if (!U8(byte)) {
        return false;
      }
      out += (byte & 0x7F) * multiplier;
      if ((byte & 0x80) == 0) {
        return true;
      }
      multiplier *= 128;
    }
    return false;  // more than four bytes
  }
  bool Bytes(size_t n, std::string_view& out) {
    if (left() < n) {
      return false;
    }
    out = data.substr(pos, n);
    pos += n;
    return true;
  }
  bool String(std::string_view& out) {
    uint16_t length = 0;
    return U16(length) && Bytes(length, out);
  }
  bool String(std::string& out) {
    std::string_view view;
    if (!String(view)) {
      return false;
    }
    out.assign(view);
    return true;
  }
};

struct Properties {
  std::optional<uint32_t> session_expiry;
  std::optional<uint16_t> receive_maximum;
  std::optional<uint16_t> server_keepalive;
  std::optional<uint16_t> topic_alias;
  std::string assigned_client_id;
  std::string reason_string;
  UserProperties user;
};

enum class PropertyRead { kOk, kTruncated, kUnknown };

/// Reads the value of property `id`, into `out` when Properties holds it.
PropertyRead ReadProperty(Cursor& props, size_t id, Properties& out) {
  bool ok = true;
  uint8_t byte = 0;
  uint16_t u16 = 0;
  uint32_t u32 = 0;
  size_t varint = 0;
  std::string_view text;
  switch (id) {
    case 0x01:  // payload format indicator
    case 0x17:  // request problem information
    case 0x19:  // request response information
    case 0x24:  // maximum QoS
    case 0x25:  // retain available
    case 0x28:  // wildcard subscription available
    case 0x29:  // subscription identifiers available
    case 0x2A:  // shared subscription available
      ok = props.U8(byte);
      break;
    case kServerKeepalive:
    case kReceiveMaximum:
    case 0x22:  // topic alias maximum
    case kTopicAlias:
      ok = props.U16(u16);
      if (id == kServerKeepalive) {
        out.server_keepalive = u16;
      } else if (id == kReceiveMaximum) {
        out.receive_maximum = u16;
      } else if (id == kTopicAlias) {
        out.topic_alias = u16;
      }
      break;
    case 0x02:  // message expiry interval
    case kSessionExpiry:
    case 0x18:  // will delay interval
    case 0x27:  // maximum packet size
      ok = props.U32(u32);
      if (id == kSessionExpiry) {
        out.session_expiry = u32;
      }
      break;
    case 0x0B:  // subscription identifier
      ok = props.Varint(varint);
      break;
    case 0x03:  // content type
    case 0x08:  // response topic
    case kAssignedClientId:
    case 0x15:  // authentication method
    case 0x1A:  // response information
    case 0x1C:  // server reference
    case kReasonString:
    case 0x09:  // correlation data (binary: the same shape)
    case 0x16:  // authentication data
      ok = props.String(text);
      if (id == kAssignedClientId) {
        out.assigned_client_id.assign(text);
      } else if (id == kReasonString) {
        out.reason_string.assign(text);
      }
      break;
    case kUserProperty: {
      std::string name;
      std::string value;
      ok = props.String(name) && props.String(value);
      if (ok) {
        out.user.emplace_back(std::move(name), std::move(value));
      }
      break;
    }
    default:
      return PropertyRead::kUnknown;
  }
  return ok ? PropertyRead::kOk : PropertyRead::kTruncated;
}

/// Reads a property list, keeping what Properties holds and skipping the rest by its type.
absl::StatusOr<Properties> ReadProperties(Cursor& in) {
  size_t length = 0;
  std::string_view raw;
  if (!in.Varint(length) || !in.Bytes(length, raw)) {
    return Malformed("property length");
  }
  Cursor props{raw};
  Properties out;
  while (props.left() > 0) {
    size_t id = 0;
    if (!props.Varint(id)) {
      return Malformed("property identifier");
    }
    switch (ReadProperty(props, id, out)) {
      case PropertyRead::kOk:
        break;
      case PropertyRead::kUnknown:
        return Malformed(absl::StrCat("unknown property 0x", absl::Hex(id)));
      case PropertyRead::kTruncated:
        return Malformed(absl::StrCat("property 0x", absl::Hex(id)));
    }
  }
  return out;
}

}  // namespace

// ---- Encoding ----

std::string EncodeConnect(const ConnectPacket& packet) {
  std::string rest;
  PutString(rest, "MQTT");
  rest.push_back(5);  // protocol version
  uint8_t flags = 0;
  if (packet.clean_start) {
    flags |= 0x02;
  }
  if (!packet.password.empty()) {
    flags |= 0x40;
  }
  if (!packet.username.empty()) {
    flags |= 0x80;
  }
  rest.push_back(static_cast<char>(flags));
  PutU16(rest, packet.keepalive_seconds);
  std::string props;
  if (packet.session_expiry_seconds > 0) {
    props.push_back(static_cast<char>(kSessionExpiry));
    PutU32(props, packet.session_expiry_seconds);
  }
  if (packet.receive_maximum > 0) {
    props.push_back(static_cast<char>(kReceiveMaximum));
    PutU16(props, packet.receive_maximum);
  }
  PutProperties(rest, props);
  PutString(rest, packet.client_id);
  if (!packet.username.empty()) {
    PutString(rest, packet.username);
  }
  if (!packet.password.empty()) {
    PutString(rest, packet.password);
  }
  return Frame(PacketType::kConnect, 0, rest);
}

std::string EncodeSubscribe(const SubscribePacket& packet) {
  std::string rest;
  PutU16(rest, packet.packet_id);
  PutProperties(rest, "");
  for (const auto& subscription : packet.subscriptions) {
    PutString(rest, subscription.filter);
    rest.push_back(static_cast<char>((subscription.qos & 0x03) |
                                     ((subscription.retain_handling & 0x03) << 4)));
  }
  return Frame(PacketType::kSubscribe, 0x02, rest);
}

std::string EncodePuback(uint16_t packet_id, uint8_t reason) {
  std::string rest;
  PutU16(rest, packet_id);
  if (reason != 0) {
    rest.push_back(static_cast<char>(reason));
  }
  return Frame(PacketType::kPuback, 0, rest);
}

std::string EncodePingreq() { return Frame(PacketType::kPingreq, 0, ""); }
std::string EncodePingresp() { return Frame(PacketType::kPingresp, 0, ""); }

std::string EncodeDisconnect(uint8_t reason) {
  return Frame(PacketType::kDisconnect, 0,
               reason == 0 ? std::string() : std::string(1, static_cast<char>(reason)));
}

std::string EncodePublish(const PublishPacket& packet) {
  std::string rest;
  PutString(rest, packet.topic);
  if (packet.qos > 0) {
    PutU16(rest, packet.packet_id);
  }
  std::string props;
  PutUserProperties(props, packet.user_properties);
  PutProperties(rest, props);
  rest.append(packet.payload);
  const auto flags = static_cast<uint8_t>((packet.dup ? 0x08 : 0) | ((packet.qos & 0x03) << 1) |
                                          (packet.retain ? 0x01 : 0));
  return Frame(PacketType::kPublish, flags, rest);
}

std::string EncodeConnack(const ConnackPacket& packet) {
  std::string rest;
  rest.push_back(packet.session_present ? 1 : 0);
  rest.push_back(static_cast<char>(packet.reason));
  std::string props;
  if (packet.server_keepalive) {
    props.push_back(static_cast<char>(kServerKeepalive));
    PutU16(props, *packet.server_keepalive);
  }
  if (packet.receive_maximum) {
    props.push_back(static_cast<char>(kReceiveMaximum));
    PutU16(props, *packet.receive_maximum);
  }
  if (!packet.assigned_client_id.empty()) {
    props.push_back(static_cast<char>(kAssignedClientId));
    PutString(props, packet.assigned_client_id);
  }
  if (!packet.reason_string.empty()) {
    props.push_back(static_cast<char>(kReasonString));
    PutString(props, packet.reason_string);
  }
  PutProperties(rest, props);
  return Frame(PacketType::kConnack, 0, rest);
}

std::string EncodeSuback(const SubackPacket& packet) {
  std::string rest;
  PutU16(rest, packet.packet_id);
  PutProperties(rest, "");
  for (const uint8_t reason : packet.reasons) {
    rest.push_back(static_cast<char>(reason));
  }
  return Frame(PacketType::kSuback, 0, rest);
}

// ---- Framing ----

void PacketReader::Append(std::string_view bytes) {
  peeked_ = 0;
  if (pos_ > 0 && pos_ == buffer_.size()) {
    buffer_.clear();
    pos_ = 0;
  } else if (pos_ > 64 * 1024 && pos_ * 2 > buffer_.size()) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  buffer_.append(bytes);
}

absl::StatusOr<std::optional<Packet>> PacketReader::Next() {
  auto packet = Peek();
  if (packet.ok() && packet->has_value()) {
    Skip();
  }
  return packet;
}

void PacketReader::Skip() {
  pos_ += peeked_;
  peeked_ = 0;
}

absl::StatusOr<std::optional<Packet>> PacketReader::Peek() {
  peeked_ = 0;
  Cursor in{std::string_view(buffer_).substr(pos_)};
  uint8_t first = 0;
  if (!in.U8(first)) {
    return std::nullopt;
  }
  size_t length = 0;
  size_t multiplier = 1;
  for (int i = 0;; ++i) {
    uint8_t byte = 0;
    if (!in.U8(byte)) {
      return std::nullopt;
    }
    length += (byte & 0x7F) * multiplier;
    if ((byte & 0x80) == 0) {
      break;
    }
    if (i == 3) {
      return Malformed("remaining length longer than four bytes");
    }
    multiplier *= 128;
  }
  std::string_view body;
  if (!in.Bytes(length, body)) {
    return std::nullopt;
  }
  const auto type = static_cast<uint8_t>(first >> 4);
  if (type == 0) {
    return Malformed("packet type 0");
  }
  peeked_ = in.pos;
  return Packet{.type = static_cast<PacketType>(type),
                .flags = static_cast<uint8_t>(first & 0x0F),
                .body = body};
}

// ---- Decoding ----

absl::StatusOr<ConnectPacket> DecodeConnect(std::string_view body) {
  Cursor in{body};
  std::string protocol;
  uint8_t version = 0;
  uint8_t flags = 0;
  ConnectPacket out;
  if (!in.String(protocol) || protocol != "MQTT" || !in.U8(version) || version != 5 ||
      !in.U8(flags) || !in.U16(out.keepalive_seconds)) {
    return Malformed("CONNECT header (MQTT 5 only)");
  }
  auto props = ReadProperties(in);
  if (!props.ok()) {
    return props.status();
  }
  out.clean_start = (flags & 0x02) != 0;
  out.session_expiry_seconds = props->session_expiry.value_or(0);
  out.receive_maximum = props->receive_maximum.value_or(0);
  if (!in.String(out.client_id) || (flags & 0x04) != 0 ||
      ((flags & 0x80) != 0 && !in.String(out.username)) ||
      ((flags & 0x40) != 0 && !in.String(out.password))) {
    return Malformed("CONNECT payload (wills are not supported here)");
  }
  return out;
}

absl::StatusOr<ConnackPacket> DecodeConnack(std::string_view body) {
  Cursor in{body};
  uint8_t flags = 0;
  ConnackPacket out;
  if (!in.U8(flags) || !in.U8(out.reason)) {
    return Malformed("CONNACK");
  }
  out.session_present = (flags & 0x01) != 0;
  if (in.left() > 0) {
    auto props = ReadProperties(in);
    if (!props.ok()) {
      return props.status();
    }
    out.server_keepalive = props->server_keepalive;
    out.receive_maximum = props->receive_maximum;
    out.assigned_client_id = std::move(props->assigned_client_id);
    out.reason_string = std::move(props->reason_string);
  }
  return out;
}

absl::StatusOr<PublishPacket> DecodePublish(uint8_t flags, std::string_view body) {
  Cursor in{body};
  PublishPacket out;
  out.qos = (flags >> 1) & 0x03;
  out.dup = (flags & 0x08) != 0;
  out.retain = (flags & 0x01) != 0;
  if (out.qos == 3) {
    return Malformed("PUBLISH with QoS 3");
  }
  if (!in.String(out.topic) || (out.qos > 0 && (!in.U16(out.packet_id) || out.packet_id == 0))) {
    return Malformed("PUBLISH topic or packet id");
  }
  auto props = ReadProperties(in);
  if (!props.ok()) {
    return props.status();
  }
  if (props->topic_alias) {
    // This client never allows topic aliases (no Topic Alias Maximum in CONNECT).
    return Malformed("PUBLISH with a topic alias");
  }
  if (out.topic.empty()) {
    return Malformed("PUBLISH without a topic");
  }
  out.user_properties = std::move(props->user);
  out.payload.assign(body.substr(in.pos));
  return out;
}

absl::StatusOr<SubscribePacket> DecodeSubscribe(std::string_view body) {
  Cursor in{body};
  SubscribePacket out;
  if (!in.U16(out.packet_id)) {
    return Malformed("SUBSCRIBE packet id");
  }
  if (auto props = ReadProperties(in); !props.ok()) {
    return props.status();
  }
  while (in.left() > 0) {
    Subscription subscription;
    uint8_t options = 0;
    if (!in.String(subscription.filter) || !in.U8(options)) {
      return Malformed("SUBSCRIBE filter");
    }
    subscription.qos = options & 0x03;
    subscription.retain_handling = (options >> 4) & 0x03;
    out.subscriptions.push_back(std::move(subscription));
  }
  return out;
}

absl::StatusOr<SubackPacket> DecodeSuback(std::string_view body) {
  Cursor in{body};
  SubackPacket out;
  if (!in.U16(out.packet_id)) {
    return Malformed("SUBACK packet id");
  }
  if (auto props = ReadProperties(in); !props.ok()) {
    return props.status();
  }
  for (const char reason : body.substr(in.pos)) {
    out.reasons.push_back(static_cast<uint8_t>(reason));
  }
  return out;
}

absl::StatusOr<std::pair<uint16_t, uint8_t>> DecodePuback(std::string_view body) {
  Cursor in{body};
  uint16_t packet_id = 0;
  uint8_t reason = 0;
  if (!in.U16(packet_id) || (in.left() > 0 && !in.U8(reason))) {
    return Malformed("PUBACK");
  }
  return std::make_pair(packet_id, reason);
}

absl::StatusOr<DisconnectPacket> DecodeDisconnect(std::string_view body) {
  Cursor in{body};
  DisconnectPacket out;
  if (in.left() == 0) {
    return out;
  }
  if (!in.U8(out.reason)) {
    return Malformed("DISCONNECT");
  }
  if (in.left() > 0) {
    auto props = ReadProperties(in);
    if (!props.ok()) {
      return props.status();
    }
    out.reason_string = std::move(props->reason_string);
  }
  return out;
}

}  // namespace iot::common::mqtt
