// The broker plugin's CONNECT parsing: client id `{device_id}_0_{0|1}_{YYYYMMDDHH}`, user name
// and password (hex HMAC-SHA256 keyed by the timestamp), and the topic ACL of the device the
// client id names; the same for the Alink form (client id `<cid>|k=v,...|`, user name
// `{deviceName}&{productKey}`, hex HMAC of the signed content). Input: client id '\n' user
// name '\n' password.
#include <cctype>
#include <chrono>
#include <cstdio>
#include <string>

#include "alink_client_id.h"
#include "alink_topics.h"
#include "client_id.h"
#include "fuzz_input.h"
#include "iot/common/crypto.h"
#include "topic_rules.h"

using iot::fuzz::Require;

namespace {

constexpr std::string_view kSecret = "a device secret";

/// The Alink form: what the parsers accept can be signed, checked and names only its own topics.
void CheckAlink(std::string_view client_id, std::string_view username, std::string_view password) {
  const auto alink = iot::broker::ParseAlinkClientId(client_id);
  if (!alink.ok()) {
    return;
  }
  Require(iot::broker::IsAlinkClientId(client_id));
  Require(!alink->cid.empty() && client_id.find(alink->cid) < client_id.find('|'));
  const auto name = iot::broker::ParseAlinkUsername(username);
  if (!name.ok()) {
    return;
  }
  const std::string& pk = name->product_key;
  const std::string& dn = name->device_name;
  const std::string id = iot::broker::AlinkDeviceId(*name);
  Require(iot::broker::IsValidDeviceId(id));
  Require(username == dn + "&" + pk);

  // The credential check accepts the signature of its declared method, in either case, and
  // otherwise only the HMAC its length names.
  const std::string content = iot::broker::AlinkSignContent(*alink, *name);
  std::string signature = iot::broker::AlinkSign(alink->sign_method, kSecret, content);
  Require(iot::broker::VerifyAlinkPassword(signature, kSecret, content));
  for (char& c : signature) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  Require(iot::broker::VerifyAlinkPassword(signature, kSecret, content));
  if (iot::broker::VerifyAlinkPassword(password, kSecret, content)) {
    std::string given(password);
    for (char& c : given) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    const auto method = iot::broker::SignMethodOfLength(password.size());
    Require(method.has_value() && given == iot::broker::AlinkSign(*method, kSecret, content));
  }

  // Its own topics and nobody else's; its uplink relayed in its own name, its downlink parsed.
  const std::string post = "/sys/" + pk + "/" + dn + "/thing/event/property/post";
  Require(iot::broker::AlinkMayPublish(pk, dn, post + "?_rid=1"));
  Require(!iot::broker::AlinkMayPublish(pk, dn + "x", post));
  Require(!iot::broker::AlinkMayPublish(pk, dn, "/sys/" + pk + "/" + dn + "x/thing/x"));
  Require(!iot::broker::AlinkMaySubscribe(pk, dn, "#"));
  Require(!iot::broker::AlinkMaySubscribe(pk, dn, "/sys/" + pk + "/+/thing/#"));
  Require(!iot::broker::AlinkMayPublish(pk, dn, "$oc/devices/" + id + "/sys/properties/report"));
  const auto relay = iot::broker::AlinkUplinkRelayTopic(id, pk, dn, post, 16);
  Require(relay.has_value() && relay->ends_with("/" + id + "/alink" + post));
  const auto down = iot::broker::ParseAlinkDownlinkTopic("$iot/down/" + id + "/alink/sys/" + pk +
                                                         "/" + dn + "/thing/service/property/set");
  Require(down.has_value() && down->device_id == id &&
          iot::broker::AlinkMayReceive(pk, dn, down->device_topic));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  iot::fuzz::Fields fields(data, size);
  const std::string_view client_id = fields.Next();
  const std::string_view username = fields.Next();
  const std::string_view password = fields.Rest();

  CheckAlink(client_id, username, password);
  const auto parsed = iot::broker::ParseClientId(client_id);
  if (!parsed) {
    return 0;
  }
  // The device id is taken from the left of the client id and can be embedded in topics.
  Require(iot::broker::IsValidDeviceId(parsed->device_id));
  Require(client_id.starts_with(parsed->device_id));
  Require(parsed->sign_type == 0 || parsed->sign_type == 1);
  // The timestamp names a real hour: that hour's date and hour give the same text back.
  const auto day = std::chrono::floor<std::chrono::days>(parsed->hour_start);
  const std::chrono::year_month_day date{day};
  const auto hour = std::chrono::duration_cast<std::chrono::hours>(parsed->hour_start - day);
  char text[16];
  std::snprintf(text, sizeof text, "%04d%02u%02u%02d", static_cast<int>(date.year()),
                static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                static_cast<int>(hour.count()));
  Require(parsed->timestamp == text);
  (void)iot::broker::TimestampWithinSkew(parsed->hour_start, std::chrono::system_clock::now(),
                                         std::chrono::hours(1));

  // The credential check as the plugin does it (lower-cased hex, constant time).
  std::string given(password);
  for (char& c : given) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  const std::string expected = iot::common::HmacSha256Hex(parsed->timestamp, "a device secret");
  const bool accepted =
      username == parsed->device_id && iot::common::ConstantTimeEquals(given, expected);
  Require(!accepted || given == expected);

  // The device's own topics and nobody else's.
  const std::string& id = parsed->device_id;
  const std::string own = iot::broker::DeviceTopicPrefix(id);
  Require(iot::broker::DeviceMayPublish(id, own + "sys/properties/report"));
  Require(iot::broker::DeviceMayReceive(id, own + "sys/messages/down"));
  Require(!iot::broker::DeviceMayPublish(
      id, iot::broker::DeviceTopicPrefix(id + "x") + "sys/properties/report"));
  Require(!iot::broker::DeviceMaySubscribe(id, "#"));
  Require(!iot::broker::DeviceMaySubscribe(id, "$oc/devices/+/sys/#"));
  Require(!iot::broker::DeviceMayPublish(id, "iot/up/0/" + id + "/sys/properties/report"));
  return 0;
}
