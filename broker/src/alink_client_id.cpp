#include "alink_client_id.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>

#include "absl/strings/ascii.h"
#include "iot/common/crypto.h"

namespace iot::broker {
namespace {

constexpr size_t kMaxNameLength = 64;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view Trim(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && IsSpace(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/// 1..kMaxNameLength characters, each alphanumeric or one of `extra`.
bool IsName(std::string_view text, std::string_view extra) {
  return !text.empty() && text.size() <= kMaxNameLength &&
         std::all_of(text.begin(), text.end(), [extra](char c) {
           return IsAlnum(c) || extra.find(c) != std::string_view::npos;
         });
}

std::optional<AlinkSignMethod> ParseSignMethod(std::string_view text) {
  std::string name(text);
  absl::AsciiStrToLower(&name);
  for (const auto method :
       {AlinkSignMethod::kHmacMd5, AlinkSignMethod::kHmacSha1, AlinkSignMethod::kHmacSha256}) {
    if (name == SignMethodName(method)) {
      return method;
    }
  }
  return std::nullopt;
}

const EVP_MD* Digest(AlinkSignMethod method) {
  switch (method) {
    case AlinkSignMethod::kHmacMd5:
      return EVP_md5();
    case AlinkSignMethod::kHmacSha1:
      return EVP_sha1();
    case AlinkSignMethod::kHmacSha256:
      return EVP_sha256();
  }
  return EVP_sha256();
}

}  // namespace

bool IsAlinkClientId(std::string_view client_id) {
  return client_id.find('|') != std::string_view::npos;
}

std::string_view SignMethodName(AlinkSignMethod method) {
  switch (method) {
    case AlinkSignMethod::kHmacMd5:
      return "hmacmd5";
    case AlinkSignMethod::kHmacSha1:
      return "hmacsha1";
    case AlinkSignMethod::kHmacSha256:
      return "hmacsha256";
  }
  return "";
}

absl::StatusOr<AlinkClientId> ParseAlinkClientId(std::string_view client_id) {
  const size_t first = client_id.find('|');
  const size_t last = client_id.rfind('|');
  if (first == std::string_view::npos || first == last) {
    return absl::InvalidArgumentError(
        "not <cid>|k=v,...| (needs a '|' before and after the "
        "parameters)");
  }
  AlinkClientId out;
  out.cid = std::string(Trim(client_id.substr(0, first)));
  if (out.cid.empty()) {
    return absl::InvalidArgumentError("empty <cid> before the first '|'");
  }
  std::string_view items = client_id.substr(first + 1, last - first - 1);
  while (!items.empty()) {
    const size_t comma = items.find(',');
    const std::string_view item = items.substr(0, comma);
    items = comma == std::string_view::npos ? std::string_view() : items.substr(comma + 1);
    const size_t equals = item.find('=');
    const std::string_view key = Trim(item.substr(0, equals));
    const std::string_view value =
        equals == std::string_view::npos ? std::string_view() : Trim(item.substr(equals + 1));
    if (key == "securemode") {
      out.securemode = std::string(value);
    } else if (key == "signmethod") {
      if (value.empty()) {
        continue;  // as if absent
      }
      const auto method = ParseSignMethod(value);
      if (!method) {
        return absl::InvalidArgumentError(fmt::format(
            "signmethod '{}' is not hmacmd5, hmacsha1 or hmacsha256", std::string(value)));
      }
      out.sign_method = *method;
    } else if (key == "timestamp") {
      out.timestamp = std::string(value);
    } else if (key == "authType") {
      out.auth_type = std::string(value);
    }
  }
  return out;
}

absl::StatusOr<AlinkName> ParseAlinkUsername(std::string_view username) {
  const size_t amp = username.find('&');
  if (amp == std::string_view::npos) {
    return absl::InvalidArgumentError("username is not {deviceName}&{productKey}");
  }
  AlinkName name{.product_key = std::string(username.substr(amp + 1)),
                 .device_name = std::string(username.substr(0, amp))};
  if (!IsName(name.device_name, "_-@.:")) {
    return absl::InvalidArgumentError(
        "deviceName (before '&') must be 1..64 characters of A-Z, a-z, 0-9, '_', '-', '@', '.', "
        "':'");
  }
  if (!IsName(name.product_key, "_-")) {
    return absl::InvalidArgumentError(
        "productKey (after '&') must be 1..64 characters of A-Z, a-z, 0-9, '_', '-'");
  }
  return name;
}

std::string AlinkDeviceId(const AlinkName& name) {
  return fmt::format("{}_{}", name.product_key, name.device_name);
}

std::string AlinkSignContent(const AlinkClientId& client_id, const AlinkName& name) {
  std::string content = fmt::format("clientId{}deviceName{}productKey{}", client_id.cid,
                                    name.device_name, name.product_key);
  if (client_id.timestamp) {
    content.append("timestamp").append(*client_id.timestamp);
  }
  return content;
}

std::string AlinkSign(AlinkSignMethod method, std::string_view secret, std::string_view content) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  HMAC(Digest(method), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(content.data()), content.size(), digest.data(),
       &size);
  return common::HexEncode(std::string_view(reinterpret_cast<const char*>(digest.data()), size));
}

std::optional<AlinkSignMethod> SignMethodOfLength(size_t hex_length) {
  switch (hex_length) {
    case 32:
      return AlinkSignMethod::kHmacMd5;
    case 40:
      return AlinkSignMethod::kHmacSha1;
    case 64:
      return AlinkSignMethod::kHmacSha256;
    default:
      return std::nullopt;
  }
}

bool VerifyAlinkPassword(std::string_view password, std::string_view secret,
                         std::string_view content) {
  const auto method = SignMethodOfLength(password.size());
  if (!method) {
    return false;
  }
  std::string given(password);
  absl::AsciiStrToLower(&given);
  return common::ConstantTimeEquals(given, AlinkSign(*method, secret, content));
}

}  // namespace iot::broker
