// Unit tests of the Alink dialect's pure parts: client id, username and signature, topic rules,
// uplink relay and downlink topics (broker/README.md, Alink devices).

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "alink_client_id.h"
#include "alink_topics.h"
#include "topic_rules.h"

namespace iot::broker {
namespace {

// ---- Client id ----

TEST(AlinkClientIdTest, ParsesTheFormsTheRealSdksSend) {
  // Node SDK 1.2.8.
  auto node = ParseAlinkClientId(
      "a1TestPK&dev01|securemode=3,signmethod=hmacsha1,timestamp=1796633291714,lan=NodeJS,"
      "_v=1.2.8|");
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ(node->cid, "a1TestPK&dev01");
  EXPECT_EQ(node->securemode, "3");
  EXPECT_EQ(node->sign_method, AlinkSignMethod::kHmacSha1);
  EXPECT_EQ(node->timestamp, "1796633291714");
  EXPECT_EQ(node->auth_type, "");

  // C SDK 3.x.
  auto c3 = ParseAlinkClientId(
      "pk.dn|timestamp=2524608000000,securemode=3,signmethod=hmacsha256,v=20,a=sdk-c-3.0.1|");
  ASSERT_TRUE(c3.ok()) << c3.status();
  EXPECT_EQ(c3->cid, "pk.dn");
  EXPECT_EQ(c3->sign_method, AlinkSignMethod::kHmacSha256);
  EXPECT_EQ(c3->timestamp, "2524608000000");

  // LinkSDK 4.x: unknown keys ignored.
  auto link4 = ParseAlinkClientId(
      "pk.dn|timestamp=2524608000000,_ss=1,_v=sdk-c-4.1.0,securemode=3,signmethod=hmacsha256,"
      "ext=3,_conn=tcp_0a1b2c|");
  ASSERT_TRUE(link4.ok()) << link4.status();
  EXPECT_EQ(link4->cid, "pk.dn");
  EXPECT_EQ(link4->sign_method, AlinkSignMethod::kHmacSha256);
  EXPECT_EQ(link4->timestamp, "2524608000000");
  EXPECT_EQ(link4->securemode, "3");
}

TEST(AlinkClientIdTest, TrimsSpacesAndDefaultsToHmacMd5) {
  // The Node SDK's alternative form spreads the client id over lines.
  auto spread = ParseAlinkClientId(
      "\n        pk&dn|securemode=3,\n        signmethod=hmacsha1,\n        timestamp=42|\n      ");
  ASSERT_TRUE(spread.ok()) << spread.status();
  EXPECT_EQ(spread->cid, "pk&dn");
  EXPECT_EQ(spread->sign_method, AlinkSignMethod::kHmacSha1);
  EXPECT_EQ(spread->timestamp, "42");

  auto bare = ParseAlinkClientId("12345||");
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->cid, "12345");
  EXPECT_EQ(bare->sign_method, AlinkSignMethod::kHmacMd5);
  EXPECT_FALSE(bare->timestamp.has_value());
  EXPECT_EQ(bare->securemode, "");

  // Empty items, a value with '=' in it (split on the first), upper-case method names, a '|'
  // inside the parameters (the last one ends them).
  auto odd = ParseAlinkClientId("c|,,securemode = 2 ,x=a=b,signmethod=HmacSHA256,y=1|2,|");
  ASSERT_TRUE(odd.ok()) << odd.status();
  EXPECT_EQ(odd->securemode, "2");
  EXPECT_EQ(odd->sign_method, AlinkSignMethod::kHmacSha256);

  auto register_form = ParseAlinkClientId("c|securemode=2,authType=register,random=9|");
  ASSERT_TRUE(register_form.ok());
  EXPECT_EQ(register_form->auth_type, "register");
}

TEST(AlinkClientIdTest, RejectsMalformedClientIds) {
  for (const char* bad : {
           "12345",                            // no '|'
           "12345|securemode=3,signmethod=x",  // one '|'
           "|securemode=3|",                   // empty cid
           "   |securemode=3|",                // only spaces
           "c|signmethod=hmacsha512|",         // unknown algorithm
           "c|signmethod=sha256|",             // not an HMAC name
       }) {
    EXPECT_FALSE(ParseAlinkClientId(bad).ok()) << bad;
  }
  EXPECT_FALSE(IsAlinkClientId("p1_n1_0_0_2026112617"));
  EXPECT_TRUE(IsAlinkClientId("12345|"));  // routed to the Alink check, which refuses it
}

// ---- Username ----

TEST(AlinkUsernameTest, IsDeviceNameAmpersandProductKey) {
  auto name = ParseAlinkUsername("dev-01@site.a:1&a1B2c3D4e5F");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(name->device_name, "dev-01@site.a:1");
  EXPECT_EQ(name->product_key, "a1B2c3D4e5F");
  EXPECT_EQ(AlinkDeviceId(*name), "a1B2c3D4e5F_dev-01@site.a:1");

  for (const char* bad : {
           "device",                    // no '&'
           "&pk",                       // empty deviceName
           "device&",                   // empty productKey
           "dev/ice&pk",                // '/' would reach other topics
           "dev+&pk", "dev#&pk",        // wildcards
           "dev ice&pk",                // white space
           "device&p/k", "device&p+k",  // in the productKey
           "device&p.k",                // '.' is for deviceNames only
           "device&pk&x",               // a second '&'
           "dev\x01&pk",                // control character
       }) {
    EXPECT_FALSE(ParseAlinkUsername(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseAlinkUsername(std::string(65, 'd') + "&pk").ok());
  EXPECT_FALSE(ParseAlinkUsername("d&" + std::string(65, 'p')).ok());
  EXPECT_TRUE(ParseAlinkUsername(std::string(64, 'd') + "&" + std::string(64, 'p')).ok());
}

// ---- Signature ----

// Test vector (/work/shared/ALINK.md): cid 12345, deviceName device, productKey pk, timestamp
// 789, secret "secret"; the MD5 and SHA-256 values computed independently (Python's hmac).
constexpr char kSha1[] = "FAFD82A3D602B37FB0FA8B7892F24A477F851A14";
constexpr char kMd5[] = "14b198324fe55e1d3c88f2e705e201ee";
constexpr char kSha256[] = "6074a46a91b1ebb2cc4ea42790ad0e80202c9843859fc292e57c4eb19fad9e57";

std::string Content(const std::string& client_id) {
  const auto parsed = ParseAlinkClientId(client_id);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return AlinkSignContent(*parsed, AlinkName{.product_key = "pk", .device_name = "device"});
}

std::string Upper(std::string text) {
  for (char& c : text) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return text;
}

std::string LowerCase(std::string text) {
  for (char& c : text) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return text;
}

TEST(AlinkSignatureTest, TheTestVector) {
  const std::string content = Content("12345|securemode=3,signmethod=hmacsha1,timestamp=789|");
  EXPECT_EQ(content, "clientId12345deviceNamedeviceproductKeypktimestamp789");
  EXPECT_EQ(AlinkSign(AlinkSignMethod::kHmacSha1, "secret", content), LowerCase(kSha1));
  EXPECT_EQ(AlinkSign(AlinkSignMethod::kHmacMd5, "secret", content), kMd5);
  EXPECT_EQ(AlinkSign(AlinkSignMethod::kHmacSha256, "secret", content), kSha256);
  // Without a timestamp the content has no "timestamp".
  EXPECT_EQ(Content("12345|securemode=3|"), "clientId12345deviceNamedeviceproductKeypk");
}

TEST(AlinkSignatureTest, EveryAlgorithmInEitherCase) {
  const std::string content = Content("12345|timestamp=789|");
  for (const std::string& signature :
       {std::string(kMd5), std::string(kSha1), std::string(kSha256)}) {
    EXPECT_TRUE(VerifyAlinkPassword(LowerCase(signature), "secret", content)) << signature;
    EXPECT_TRUE(VerifyAlinkPassword(Upper(signature), "secret", content)) << signature;
    EXPECT_FALSE(VerifyAlinkPassword(signature, "other-secret", content)) << signature;
    // Another timestamp, device or client id: another content.
    EXPECT_FALSE(VerifyAlinkPassword(signature, "secret", Content("12345|timestamp=788|")));
    EXPECT_FALSE(VerifyAlinkPassword(signature, "secret", Content("12346|timestamp=789|")));
  }
}

TEST(AlinkSignatureTest, TheLengthNamesTheAlgorithmWhateverTheClientIdSays) {
  // The Node SDK signs HMAC-SHA1 while its client id says hmacsha256.
  const std::string content =
      Content("12345|securemode=3,signmethod=hmacsha256,timestamp=789,lan=NodeJS,_v=1.2.8|");
  EXPECT_TRUE(VerifyAlinkPassword(LowerCase(kSha1), "secret", content));
  EXPECT_TRUE(VerifyAlinkPassword(kMd5, "secret", content));
  EXPECT_TRUE(VerifyAlinkPassword(kSha256, "secret", content));
  EXPECT_EQ(SignMethodOfLength(32), AlinkSignMethod::kHmacMd5);
  EXPECT_EQ(SignMethodOfLength(40), AlinkSignMethod::kHmacSha1);
  EXPECT_EQ(SignMethodOfLength(64), AlinkSignMethod::kHmacSha256);
  // Other lengths name nothing: a truncated or padded signature is refused.
  for (const std::string& bad :
       {std::string(kSha1).substr(0, 39), std::string(kSha1) + "0", std::string(),
        std::string(kSha256).substr(0, 48), std::string(kMd5).substr(0, 31)}) {
    EXPECT_FALSE(VerifyAlinkPassword(bad, "secret", content)) << bad;
  }
  // Not hex at all, of a valid length.
  EXPECT_FALSE(VerifyAlinkPassword(std::string(40, 'z'), "secret", content));
}

// ---- Topics ----

TEST(AlinkTopicsTest, StripsLinkSdksRequestIdFromTheLastLevelOnly) {
  EXPECT_EQ(StripAlinkRequestId("/sys/pk/dn/thing/event/property/post?_rid=1700000000123"),
            "/sys/pk/dn/thing/event/property/post");
  EXPECT_EQ(StripAlinkRequestId("/sys/pk/dn/thing/event/property/post?_rid=1?_rid=2"),
            "/sys/pk/dn/thing/event/property/post");
  EXPECT_EQ(StripAlinkRequestId("/sys/pk/dn/thing/event/property/post"),
            "/sys/pk/dn/thing/event/property/post");
  // Not in the last level: left alone (and not one of the device's topics then).
  EXPECT_EQ(StripAlinkRequestId("/pk/dn/user/a?_rid=1/b"), "/pk/dn/user/a?_rid=1/b");
}

TEST(AlinkTopicsTest, DevicePublishesOnlyItsOwnTopics) {
  for (const char* ok : {
           "/sys/pk/dn/thing/event/property/post",
           "/sys/pk/dn/thing/event/property/post?_rid=123",
           "/sys/pk/dn/thing/event/property/batch/post",
           "/sys/pk/dn/thing/event/alarm/post",
           "/sys/pk/dn/thing/service/property/set_reply",
           "/sys/pk/dn/thing/model/up_raw",
           "/sys/pk/dn/rrpc/response/1234",
           "/sys/pk/dn/rrpc/response/1234?_rid=5",
           "/pk/dn/user/foo",
           "/pk/dn/user/foo/bar?_rid=9",
           "/shadow/update/pk/dn",
           "/shadow/update/pk/dn?_rid=1",
           "/ext/ntp/pk/dn/request",
           "/ext/rrpc/99/sys/pk/dn/thing/service/reboot",
       }) {
    EXPECT_TRUE(AlinkMayPublish("pk", "dn", ok)) << ok;
  }
  for (const char* denied : {
           "/sys/pk/dn2/thing/event/property/post",  // another device
           "/sys/pk2/dn/thing/event/property/post",  // another product
           "/sys/pk/d/thing/event/property/post",    // a prefix of ours
           "/sys/pk/dnx/thing/event/property/post",
           "/sys/pk/dn/thing/",          // nothing below thing/
           "/sys/pk/dn/rrpc/request/1",  // a down-topic
           "/sys/pk/dn/rrpc/response/",  // no id
           "/sys/pk/dn/rrpc/response/1/x",
           "/sys/pk/dn/other",
           "/pk/dn/user/",
           "/pk/dn/get",
           "/pk/dn2/user/foo",
           "/shadow/get/pk/dn",  // the device's down-topic
           "/shadow/update/pk/dn/x",
           "/shadow/update/pk/dn2",
           "/ext/ntp/pk/dn/response",
           "/ext/ntp/pk/dn2/request",
           "/ext/rrpc//sys/pk/dn/thing/service/x",
           "/ext/rrpc/1/sys/pk/dn2/thing/service/x",
           "/ext/rrpc/1/sys/pk/dn/",
           "sys/pk/dn/thing/event/property/post",      // no leading '/'
           "$oc/devices/pk_dn/sys/properties/report",  // the IoTDA form
           "iot/up/0/pk_dn/alink/sys/pk/dn/thing/event/property/post",
           "$iot/down/pk_dn/alink/sys/pk/dn/thing/service/property/set",
           "/sys/pk/dn?_rid=1/thing/event/property/post",  // only the last level's is stripped
       }) {
    EXPECT_FALSE(AlinkMayPublish("pk", "dn", denied)) << denied;
  }
}

TEST(AlinkTopicsTest, DeviceSubscribesAndReceivesOnlyItsOwnTopics) {
  // What the Node SDK subscribes to, and filters over the same topics.
  for (const char* ok : {
           "/sys/pk/dn/thing/event/property/post_reply",
           "/sys/pk/dn/thing/service/property/set",
           "/sys/pk/dn/thing/event/+/post_reply",
           "/sys/pk/dn/thing/config/#",
           "/sys/pk/dn/rrpc/request/+",
           "/sys/pk/dn/#",
           "/pk/dn/user/#",
           "/pk/dn/user/get",
           "/shadow/get/pk/dn",
           "/ext/ntp/pk/dn/response",
           "/ext/rrpc/+/sys/pk/dn/#",
           "/ext/rrpc/+/sys/pk/dn/thing/service/+",
       }) {
    EXPECT_TRUE(AlinkMaySubscribe("pk", "dn", ok)) << ok;
  }
  for (const char* denied : {
           "#",
           "/#",
           "/sys/#",
           "/sys/pk/#",
           "/sys/pk/+/thing/#",
           "/sys/+/dn/#",
           "/sys/pk/dn2/#",
           "/sys/pk/dn",
           "/pk/dn/#",
           "/pk/dn/user/",
           "/pk/+/user/#",
           "/shadow/get/pk/+",
           "/shadow/get/#",
           "/shadow/update/pk/dn",
           "/ext/ntp/pk/dn/request",
           "/ext/ntp/pk/dn/+",
           "/ext/rrpc/#",
           "/ext/rrpc/+/sys/pk/+/#",
           "/ext/rrpc/#/sys/pk/dn/#",
           "/ext/session/pk/dn/combine/login_reply",
           "$share/g/sys/pk/dn/#",
           "$oc/devices/pk_dn/#",
           "iot/up/+/pk_dn/#",
           "$iot/#",
       }) {
    EXPECT_FALSE(AlinkMaySubscribe("pk", "dn", denied)) << denied;
  }
  EXPECT_TRUE(AlinkMayReceive("pk", "dn", "/sys/pk/dn/thing/service/property/set"));
  EXPECT_TRUE(AlinkMayReceive("pk", "dn", "/sys/pk/dn/rrpc/request/123"));
  EXPECT_TRUE(AlinkMayReceive("pk", "dn", "/ext/rrpc/123/sys/pk/dn/thing/service/reboot"));
  EXPECT_TRUE(AlinkMayReceive("pk", "dn", "/shadow/get/pk/dn"));
  EXPECT_FALSE(AlinkMayReceive("pk", "dn", "/sys/pk/dn/rrpc/request/+"));  // not a topic
  EXPECT_FALSE(AlinkMayReceive("pk", "dn", "/sys/pk/dn2/thing/service/property/set"));
  EXPECT_FALSE(AlinkMayReceive("pk", "dn", "$oc/devices/pk_dn/sys/messages/down"));
}

TEST(AlinkTopicsTest, UplinkIsRelayedBelowIotUpWithTheAlinkTopic) {
  const uint32_t p = UplinkPartition("pk_dn", 16);
  EXPECT_EQ(AlinkUplinkRelayTopic("pk_dn", "pk", "dn", "/sys/pk/dn/thing/event/property/post", 16),
            fmt::format("iot/up/{}/pk_dn/alink/sys/pk/dn/thing/event/property/post", p));
  EXPECT_EQ(AlinkUplinkRelayTopic("pk_dn", "pk", "dn",
                                  "/sys/pk/dn/thing/event/property/post?_rid=17", 16),
            fmt::format("iot/up/{}/pk_dn/alink/sys/pk/dn/thing/event/property/post", p));
  EXPECT_EQ(AlinkUplinkRelayTopic("pk_dn", "pk", "dn", "/pk/dn/user/foo", 16),
            fmt::format("iot/up/{}/pk_dn/alink/pk/dn/user/foo", p));
  EXPECT_EQ(AlinkUplinkRelayTopic("pk_dn", "pk", "dn", "/shadow/update/pk/dn", 16),
            fmt::format("iot/up/{}/pk_dn/alink/shadow/update/pk/dn", p));
  EXPECT_EQ(AlinkUplinkRelayTopic("pk_dn", "pk", "dn", "/ext/ntp/pk/dn/request", 16),
            fmt::format("iot/up/{}/pk_dn/alink/ext/ntp/pk/dn/request", p));
  EXPECT_EQ(
      AlinkUplinkRelayTopic("pk_dn", "pk", "dn", "/ext/rrpc/42/sys/pk/dn/thing/service/reboot", 16),
      fmt::format("iot/up/{}/pk_dn/alink/ext/rrpc/42/sys/pk/dn/thing/service/reboot", p));
  EXPECT_FALSE(
      AlinkUplinkRelayTopic("pk_dn", "pk", "dn", "/sys/pk/dn2/thing/event/property/post", 16));
  EXPECT_FALSE(AlinkUplinkRelayTopic("pk_dn", "pk", "dn", "/shadow/get/pk/dn", 16));
}

TEST(AlinkTopicsTest, ParsesDownlinkTopicsOfTheDeviceItNames) {
  const auto down = ParseAlinkDownlinkTopic("$iot/down/pk_dn/alink/sys/pk/dn/rrpc/request/77");
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(down->device_id, "pk_dn");
  EXPECT_EQ(down->suffix, "alink/sys/pk/dn/rrpc/request/77");
  EXPECT_EQ(down->device_topic, "/sys/pk/dn/rrpc/request/77");
  // productKey and deviceName may both contain '_': every split is tried.
  const auto split = ParseAlinkDownlinkTopic("$iot/down/a_b_c_d/alink/shadow/get/a_b/c_d");
  ASSERT_TRUE(split.has_value());
  EXPECT_EQ(split->device_topic, "/shadow/get/a_b/c_d");
  for (const char* ok :
       {"$iot/down/pk_dn/alink/sys/pk/dn/thing/service/property/set",
        "$iot/down/pk_dn/alink/pk/dn/user/foo", "$iot/down/pk_dn/alink/ext/ntp/pk/dn/response",
        "$iot/down/pk_dn/alink/ext/rrpc/5/sys/pk/dn/thing/service/x"}) {
    EXPECT_TRUE(ParseAlinkDownlinkTopic(ok).has_value()) << ok;
  }
  for (const char* bad : {
           "$iot/down/pk_dn/alink",                             // no topic
           "$iot/down/pk_dn/alink/",                            // nor here
           "$iot/down/pk_dn/alinksys/pk/dn/thing/service/x",    // no '/' after alink
           "$iot/down/pk_dn/alink/sys/pk/dn2/thing/service/x",  // another device's
           "$iot/down/pk_dn2/alink/sys/pk/dn/thing/service/x",  // names another device
           "$iot/down/pk_dn/alink/sys/pk/dn/thing/service/+",   // wildcard
           "$iot/down/pk_dn/alink/shadow/update/pk/dn",         // an up-topic
           "$iot/down/pkdn/alink/sys/pk/dn/thing/service/x",    // no '_' to split on
           "$iot/down/_dn/alink/sys//dn/thing/service/x",       // empty productKey
           "$iot/down/pk_dn/sys/commands/request_id=1",         // the IoTDA form
           "$iot/presence/pk_dn",
       }) {
    EXPECT_FALSE(ParseAlinkDownlinkTopic(bad).has_value()) << bad;
  }
  // And the IoTDA parser takes none of the Alink ones.
  EXPECT_FALSE(
      ParseDownlinkTopic("$iot/down/pk_dn/alink/sys/pk/dn/thing/service/property/set").has_value());
}

}  // namespace
}  // namespace iot::broker
