// MQTT v5 packet encoding and decoding, and the acknowledgement window of MqttConsumer.
#include "iot/common/mqtt_packets.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "iot/common/mqtt_consumer.h"

namespace iot::common {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

/// The one packet in `bytes`.
mqtt::Packet Only(mqtt::PacketReader& reader, std::string_view bytes) {
  reader.Append(bytes);
  auto packet = reader.Next();
  EXPECT_TRUE(packet.ok()) << packet.status();
  EXPECT_TRUE(packet->has_value());
  return **packet;
}

TEST(MqttPacketsTest, ConnectCarriesThePersistentSessionSettings) {
  const std::string bytes = mqtt::EncodeConnect({.client_id = "gw-p3",
                                                 .username = "gateway",
                                                 .password = "secret",
                                                 .clean_start = false,
                                                 .keepalive_seconds = 30,
                                                 .session_expiry_seconds = 86400,
                                                 .receive_maximum = 512});
  // Fixed header 0x10, then protocol name "MQTT", version 5, flags user+password, clean start
  // off (0xC0).
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), 0x10);
  EXPECT_EQ(bytes.substr(2, 7), std::string("\0\4MQTT\5", 7));
  EXPECT_EQ(static_cast<uint8_t>(bytes[9]), 0xC0);
  mqtt::PacketReader reader;
  const auto packet = Only(reader, bytes);
  ASSERT_EQ(packet.type, mqtt::PacketType::kConnect);
  auto connect = mqtt::DecodeConnect(packet.body);
  ASSERT_TRUE(connect.ok()) << connect.status();
  EXPECT_EQ(connect->client_id, "gw-p3");
  EXPECT_EQ(connect->username, "gateway");
  EXPECT_EQ(connect->password, "secret");
  EXPECT_FALSE(connect->clean_start);
  EXPECT_EQ(connect->keepalive_seconds, 30);
  EXPECT_EQ(connect->session_expiry_seconds, 86400U);
  EXPECT_EQ(connect->receive_maximum, 512);
}

TEST(MqttPacketsTest, PublishRoundTripsWithUserPropertiesAndFlags) {
  const mqtt::PublishPacket sent{.topic = "iot/up/3/p1_a/sys/properties/report",
                                 .payload = std::string("{\"x\":1}\0bin", 11),
                                 .qos = 1,
                                 .retain = false,
                                 .dup = true,
                                 .packet_id = 65535,
                                 .user_properties = {{"iot-message-id", "ab12-7"}, {"k", ""}}};
  mqtt::PacketReader reader;
  const auto packet = Only(reader, mqtt::EncodePublish(sent));
  ASSERT_EQ(packet.type, mqtt::PacketType::kPublish);
  auto got = mqtt::DecodePublish(packet.flags, packet.body);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->topic, sent.topic);
  EXPECT_EQ(got->payload, sent.payload);
  EXPECT_EQ(got->qos, 1);
  EXPECT_TRUE(got->dup);
  EXPECT_FALSE(got->retain);
  EXPECT_EQ(got->packet_id, 65535);
  EXPECT_EQ(got->user_properties, sent.user_properties);
}

TEST(MqttPacketsTest, SmallPacketsHaveTheirExactBytes) {
  EXPECT_EQ(mqtt::EncodePuback(0x1234), std::string("\x40\x02\x12\x34", 4));  // v5 short form
  EXPECT_EQ(mqtt::EncodePuback(1, 0x80), std::string("\x40\x03\x00\x01\x80", 5));
  EXPECT_EQ(mqtt::EncodePingreq(), std::string("\xC0\x00", 2));
  EXPECT_EQ(mqtt::EncodeDisconnect(), std::string("\xE0\x00", 2));
  // SUBSCRIBE: fixed header flags 0b0010; options byte = QoS | retain handling << 4.
  const std::string subscribe = mqtt::EncodeSubscribe(
      {.packet_id = 1, .subscriptions = {{.filter = "a/#", .qos = 1, .retain_handling = 2}}});
  EXPECT_EQ(subscribe, std::string("\x82\x09\x00\x01\x00\x00\x03"
                                   "a/#\x21",
                                   11));
  mqtt::PacketReader reader;
  auto decoded = mqtt::DecodeSubscribe(Only(reader, subscribe).body);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->subscriptions[0].retain_handling, 2);
}

TEST(MqttPacketsTest, ConnackAndSubackAndDisconnectDecode) {
  mqtt::PacketReader reader;
  auto connack = mqtt::DecodeConnack(Only(reader, mqtt::EncodeConnack({.session_present = true,
                                                                       .reason = 0,
                                                                       .server_keepalive = 20,
                                                                       .receive_maximum = 10,
                                                                       .assigned_client_id = {},
                                                                       .reason_string = "welcome"}))
                                         .body);
  ASSERT_TRUE(connack.ok()) << connack.status();
  EXPECT_TRUE(connack->session_present);
  EXPECT_EQ(connack->server_keepalive, 20);
  EXPECT_EQ(connack->reason_string, "welcome");
  auto suback = mqtt::DecodeSuback(
      Only(reader, mqtt::EncodeSuback({.packet_id = 1, .reasons = {1, 0x87}})).body);
  ASSERT_TRUE(suback.ok());
  EXPECT_THAT(suback->reasons, ElementsAre(1, 0x87));
  auto disconnect = mqtt::DecodeDisconnect(Only(reader, std::string("\xE0\x01\x8E", 3)).body);
  ASSERT_TRUE(disconnect.ok());
  EXPECT_EQ(disconnect->reason, 0x8E);
  // A v5 broker may send a CONNACK or DISCONNECT without properties.
  EXPECT_TRUE(mqtt::DecodeConnack(std::string("\0\0", 2)).ok());
  EXPECT_TRUE(mqtt::DecodeDisconnect("").ok());
}

TEST(MqttPacketsTest, ReaderReassemblesPacketsSplitAnywhere) {
  std::string stream;
  for (int i = 1; i <= 3; ++i) {
    stream += mqtt::EncodePublish({.topic = "t",
                                   .payload = std::string(200 * static_cast<size_t>(i), 'x'),
                                   .qos = 1,
                                   .retain = false,
                                   .dup = false,
                                   .packet_id = static_cast<uint16_t>(i),
                                   .user_properties = {}});
  }
  mqtt::PacketReader reader;
  std::vector<uint16_t> ids;
  for (const char byte : stream) {  // one byte at a time: two-byte remaining lengths too
    reader.Append(std::string_view(&byte, 1));
    while (true) {
      auto packet = reader.Next();
      ASSERT_TRUE(packet.ok());
      if (!packet->has_value()) {
        break;
      }
      auto publish = mqtt::DecodePublish((*packet)->flags, (*packet)->body);
      ASSERT_TRUE(publish.ok());
      ids.push_back(publish->packet_id);
    }
  }
  EXPECT_THAT(ids, ElementsAre(1, 2, 3));
  EXPECT_EQ(reader.buffered(), 0U);
}

TEST(MqttPacketsTest, MalformedInputIsRefusedNotMisread) {
  mqtt::PacketReader reader;
  reader.Append(std::string("\x30\xFF\xFF\xFF\xFF\x01", 6));  // five-byte remaining length
  EXPECT_FALSE(reader.Next().ok());
  // A topic length beyond the packet, QoS 3, packet id 0, an unknown property.
  EXPECT_FALSE(mqtt::DecodePublish(0x02, std::string("\x00\x09t", 3)).ok());
  EXPECT_FALSE(mqtt::DecodePublish(0x06, std::string("\x00\x01t\x00\x01\x00", 6)).ok());
  EXPECT_FALSE(mqtt::DecodePublish(0x02, std::string("\x00\x01t\x00\x00\x00", 6)).ok());
  EXPECT_FALSE(mqtt::DecodePublish(0x00, std::string("\x00\x01t\x02\x7F\x00", 6)).ok());
  // A topic alias is never allowed (this client sends no Topic Alias Maximum).
  EXPECT_FALSE(mqtt::DecodePublish(0x00, std::string("\x00\x01t\x03\x23\x00\x01", 7)).ok());
}

TEST(AckWindowTest, PubacksGoOutInReceiveOrderAsThePrefixIsAcknowledged) {
  AckWindow window;
  const uint64_t a = *window.Deliver(10);
  const uint64_t b = *window.Deliver(11);
  const uint64_t c = *window.Deliver(12);
  std::vector<uint16_t> ready;
  EXPECT_FALSE(window.Ack(c));  // not the oldest
  EXPECT_FALSE(window.Ack(b));
  window.TakeReady(ready);
  EXPECT_THAT(ready, IsEmpty());  // 10 holds them back
  EXPECT_TRUE(window.Ack(a));
  window.TakeReady(ready);
  EXPECT_THAT(ready, ElementsAre(10, 11, 12));
  EXPECT_EQ(window.in_flight(), 0U);
  // A packet id is free again once acknowledged, and a second delivery of one in flight is not
  // handed over twice.
  EXPECT_TRUE(window.Deliver(10).has_value());
  EXPECT_FALSE(window.Deliver(10).has_value());
}

TEST(AckWindowTest, DeliveriesOfALostConnectionAreCountedNotAcknowledged) {
  AckWindow window;
  const uint64_t old_a = *window.Deliver(1);
  const uint64_t old_b = *window.Deliver(2);
  EXPECT_TRUE(window.Ack(old_a));  // acknowledged but its PUBACK never went out
  window.NewConnection();
  EXPECT_EQ(window.stale(), 1U);
  EXPECT_EQ(window.in_flight(), 0U);
  // The broker sends packet 2 again on the new connection: a new token.
  const uint64_t again = *window.Deliver(2);
  EXPECT_NE(again, old_b);
  EXPECT_FALSE(window.Ack(old_b));  // the old token only counts
  EXPECT_EQ(window.stale(), 0U);
  std::vector<uint16_t> ready;
  window.TakeReady(ready);
  EXPECT_THAT(ready, IsEmpty());  // the old ack is not the new delivery's
  EXPECT_TRUE(window.Ack(again));
  window.TakeReady(ready);
  EXPECT_THAT(ready, ElementsAre(2));
}

}  // namespace
}  // namespace iot::common
