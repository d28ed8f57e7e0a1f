#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace iot::common {

/// `n` bytes from OpenSSL's CSPRNG.
std::string RandomBytes(size_t n);

std::string HexEncode(std::string_view bytes);
/// 0..15 for a hex digit (either case), -1 otherwise.
int HexDigitValue(char c);
absl::StatusOr<std::string> HexDecode(std::string_view hex);
/// Standard base64 with padding.
std::string Base64Encode(std::string_view bytes);
absl::StatusOr<std::string> Base64Decode(std::string_view text);
/// URL-safe base64 without padding (API keys, tokens).
std::string Base64UrlEncode(std::string_view bytes);

/// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);
/// Lowercase hex HMAC-SHA256(key, message): the IoTDA device password is
/// HmacSha256Hex(key = timestamp "YYYYMMDDHH", message = device secret).
std::string HmacSha256Hex(std::string_view key, std::string_view message);
/// Compares in time independent of where the inputs differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

/// Authenticated encryption of secrets at rest: AES-256-GCM, random 96-bit nonce, the
/// associated data (e.g. the device id) bound into the tag so a sealed value cannot be moved
/// to another record. Sealed form: `v1:` + base64(nonce | ciphertext | tag).
class SecretBox {
 public:
  /// `key` is 32 bytes given as 64 hex characters or as base64 (IOT_SECRET_KEY).
  static absl::StatusOr<SecretBox> FromKeyText(std::string_view key);
  /// A raw 32-byte key.
  static absl::StatusOr<SecretBox> FromRawKey(std::string_view key);

  [[nodiscard]] std::string Seal(std::string_view plaintext, std::string_view aad) const;
  /// DATA_LOSS when the value was tampered with, sealed for other associated data or with
  /// another key; INVALID_ARGUMENT when it is not a sealed value at all.
  [[nodiscard]] absl::StatusOr<std::string> Open(std::string_view sealed,
                                                 std::string_view aad) const;

 private:
  explicit SecretBox(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

}  // namespace iot::common
