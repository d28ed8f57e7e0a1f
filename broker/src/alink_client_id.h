#pragma once

// The Alibaba Cloud IoT ("Alink") device identity carried in CONNECT (broker/README.md, Alink
// devices): client id `<cid>|k=v,...|`, username `{deviceName}&{productKey}`, password = hex
// HMAC(deviceSecret, "clientId"<cid>"deviceName"<dn>"productKey"<pk>["timestamp"<ts>]).
// The device is the registry's `{productKey}_{deviceName}` (product id = productKey, node id =
// deviceName).

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace iot::broker {

/// True when `client_id` has the Alink form's `|`. IoTDA client ids never contain one (device
/// ids are made of product and node ids, neither of which may), so the form decides the dialect
/// the connect is checked in.
bool IsAlinkClientId(std::string_view client_id);

enum class AlinkSignMethod { kHmacMd5, kHmacSha1, kHmacSha256 };

struct AlinkClientId {
  /// The text before the first `|`, trimmed: the `clientId` of the signed content.
  std::string cid;
  /// `securemode` (2 TLS, 3 plain TCP, -2 token login); empty when absent.
  std::string securemode;
  /// `signmethod`; HMAC-MD5 when absent.
  AlinkSignMethod sign_method = AlinkSignMethod::kHmacMd5;
  /// `timestamp` exactly as sent (signed when present; its age is not checked: the C SDKs send
  /// the fixed 2524608000000).
  std::optional<std::string> timestamp;
  /// `authType` (e.g. `register`: dynamic registration); empty when absent.
  std::string auth_type;
};

/// Parses `<cid>|k=v,k=v,...|`: `<cid>` is the text before the first `|`; what lies between the
/// first and the last `|` is split on `,`, each item on its first `=`; keys and values are
/// trimmed of white space (the Node SDK's alternative form spreads the client id over lines);
/// unknown keys, empty items and what follows the last `|` are ignored. INVALID_ARGUMENT (the
/// message says why) without a second `|`, for an empty `<cid>` or a `signmethod` other than
/// hmacmd5, hmacsha1 or hmacsha256 (any case).
absl::StatusOr<AlinkClientId> ParseAlinkClientId(std::string_view client_id);

/// An Alink device's name: `productKey` and `deviceName`.
struct AlinkName {
  std::string product_key;
  std::string device_name;
};

/// Parses the username `{deviceName}&{productKey}`: deviceName 1..64 of [A-Za-z0-9_-@.:],
/// productKey 1..64 of [A-Za-z0-9_-] (the registry's node and product ids of an Alink product).
/// INVALID_ARGUMENT, saying why, otherwise.
absl::StatusOr<AlinkName> ParseAlinkUsername(std::string_view username);

/// `{productKey}_{deviceName}`: the registry's device id.
std::string AlinkDeviceId(const AlinkName& name);

/// "clientId"<cid>"deviceName"<dn>"productKey"<pk>["timestamp"<ts>]: what the password signs
/// (names in sorted order, each only when present).
std::string AlinkSignContent(const AlinkClientId& client_id, const AlinkName& name);

/// Lowercase hex HMAC(key = `secret`, `content`).
std::string AlinkSign(AlinkSignMethod method, std::string_view secret, std::string_view content);

/// The algorithm a hex HMAC of `hex_length` characters was made with: 32 MD5, 40 SHA-1, 64
/// SHA-256; nullopt for any other length.
std::optional<AlinkSignMethod> SignMethodOfLength(size_t hex_length);

/// True when `password` is the hex HMAC (either case, compared in constant time) of `content`
/// under `secret` with the algorithm its length names — whatever the client id's `signmethod`
/// says: the Node SDK (alibabacloud-iot-device-sdk 1.2.x) always signs HMAC-SHA1, also when it
/// declares hmacsha256.
bool VerifyAlinkPassword(std::string_view password, std::string_view secret,
                         std::string_view content);

/// `hmacmd5`, `hmacsha1`, `hmacsha256`.
std::string_view SignMethodName(AlinkSignMethod method);

}  // namespace iot::broker
