#pragma once

// MQTT v5 packets as bytes: what MqttConsumer (mqtt_consumer.h) writes and reads, and what a
// test broker needs to answer it. Pure functions, no I/O. Only what a QoS 0/1 subscriber uses
// (CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT out; CONNACK, PUBLISH, SUBACK, PINGRESP,
// DISCONNECT in), plus the other direction of each for tests.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace iot::common::mqtt {

enum class PacketType : uint8_t {
  kConnect = 1,
  kConnack = 2,
  kPublish = 3,
  kPuback = 4,
  kPubrec = 5,
  kPubrel = 6,
  kPubcomp = 7,
  kSubscribe = 8,
  kSuback = 9,
  kUnsubscribe = 10,
  kUnsuback = 11,
  kPingreq = 12,
  kPingresp = 13,
  kDisconnect = 14,
  kAuth = 15,
};

/// MQTT's largest Remaining Length (four bytes of variable byte integer).
inline constexpr size_t kMaxRemainingLength = 268'435'455;

using UserProperties = std::vector<std::pair<std::string, std::string>>;

struct ConnectPacket {
  std::string client_id;
  std::string username;  ///< empty: none
  std::string password;  ///< empty: none
  bool clean_start = true;
  uint16_t keepalive_seconds = 30;
  uint32_t session_expiry_seconds = 0;  ///< 0: not sent
  uint16_t receive_maximum = 0;         ///< 0: not sent (65535)
};

struct Subscription {
  std::string filter;
  int qos = 1;
  /// 0: retained messages are sent at subscribe time, 1: only if the subscription is new,
  /// 2: never.
  int retain_handling = 0;
};

struct PublishPacket {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  bool dup = false;
  uint16_t packet_id = 0;  ///< QoS > 0 only
  UserProperties user_properties;
};

struct ConnackPacket {
  bool session_present = false;
  uint8_t reason = 0;
  std::optional<uint16_t> server_keepalive;
  std::optional<uint16_t> receive_maximum;
  std::string assigned_client_id;
  std::string reason_string;
};

struct SubscribePacket {
  uint16_t packet_id = 0;
  std::vector<Subscription> subscriptions;
};

struct SubackPacket {
  uint16_t packet_id = 0;
  std::vector<uint8_t> reasons;
};

struct DisconnectPacket {
  uint8_t reason = 0;
  std::string reason_string;
};

std::string EncodeConnect(const ConnectPacket& packet);
std::string EncodeSubscribe(const SubscribePacket& packet);
/// Reason 0 (success) is the two-byte short form of MQTT 5 §3.4.2.1.
std::string EncodePuback(uint16_t packet_id, uint8_t reason = 0);
std::string EncodePingreq();
std::string EncodePingresp();
std::string EncodeDisconnect(uint8_t reason = 0);
std::string EncodePublish(const PublishPacket& packet);
std::string EncodeConnack(const ConnackPacket& packet);
std::string EncodeSuback(const SubackPacket& packet);

/// One packet: the fixed header's type and flags, and the rest (a view into the reader's
/// buffer, valid until the next Append()).
struct Packet {
  PacketType type = PacketType::kConnect;
  uint8_t flags = 0;
  std::string_view body;
};

/// Splits a byte stream into packets.
class PacketReader {
 public:
  void Append(std::string_view bytes);
  /// The next complete packet; nullopt when more bytes are needed; INVALID_ARGUMENT for a
  /// malformed fixed header (the stream cannot be resynchronised: close the connection).
  absl::StatusOr<std::optional<Packet>> Next();
  /// Like Next(), but the packet stays first until Skip().
  absl::StatusOr<std::optional<Packet>> Peek();
  /// Consumes the packet the last Peek() returned.
  void Skip();
  [[nodiscard]] size_t buffered() const { return buffer_.size() - pos_; }

 private:
  std::string buffer_;
  size_t pos_ = 0;
  size_t peeked_ = 0;  ///< Size of the packet the last Peek() returned.
};

absl::StatusOr<ConnectPacket> DecodeConnect(std::string_view body);
absl::StatusOr<ConnackPacket> DecodeConnack(std::string_view body);
absl::StatusOr<PublishPacket> DecodePublish(uint8_t flags, std::string_view body);
absl::StatusOr<SubscribePacket> DecodeSubscribe(std::string_view body);
absl::StatusOr<SubackPacket> DecodeSuback(std::string_view body);
/// The packet id of a PUBACK and its reason code.
absl::StatusOr<std::pair<uint16_t, uint8_t>> DecodePuback(std::string_view body);
absl::StatusOr<DisconnectPacket> DecodeDisconnect(std::string_view body);

}  // namespace iot::common::mqtt
