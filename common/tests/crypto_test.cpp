#include "iot/common/crypto.h"

#include <gtest/gtest.h>

namespace iot::common {
namespace {

TEST(CryptoTest, KnownVectors) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // RFC 4231 test case 2.
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(*Base64Decode("Zm8="), "fo");
  EXPECT_EQ(Base64UrlEncode(std::string("\xfb\xff", 2)), "-_8");
  EXPECT_EQ(HexEncode(std::string("\x00\xff", 2)), "00ff");
  EXPECT_EQ(*HexDecode("00FF"), std::string("\x00\xff", 2));
  EXPECT_FALSE(HexDecode("0").ok());
  EXPECT_FALSE(HexDecode("zz").ok());
  EXPECT_FALSE(Base64Decode("abc").ok());
}

TEST(CryptoTest, IotdaDevicePassword) {
  // password = HMAC-SHA256(key = timestamp, message = secret), as Huawei's device SDKs compute.
  EXPECT_EQ(HmacSha256Hex("2026112617", "secret123"), HmacSha256Hex("2026112617", "secret123"));
  EXPECT_NE(HmacSha256Hex("2026112617", "secret123"), HmacSha256Hex("2026112618", "secret123"));
  EXPECT_EQ(HmacSha256Hex("2026112617", "secret123").size(), 64u);
}

TEST(CryptoTest, RandomBytesDiffer) {
  EXPECT_EQ(RandomBytes(32).size(), 32u);
  EXPECT_NE(RandomBytes(32), RandomBytes(32));
}

TEST(CryptoTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
}

TEST(SecretBoxTest, SealsAndOpensBoundToAssociatedData) {
  auto box = SecretBox::FromKeyText(HexEncode(std::string(32, '\x42')));
  ASSERT_TRUE(box.ok()) << box.status();
  const std::string sealed = box->Seal("device-secret-1", "p1_n1");
  EXPECT_EQ(sealed.rfind("v1:", 0), 0u);
  EXPECT_EQ(sealed.find("device-secret-1"), std::string::npos);
  EXPECT_NE(sealed, box->Seal("device-secret-1", "p1_n1")) << "nonce must be random";
  EXPECT_EQ(*box->Open(sealed, "p1_n1"), "device-secret-1");
  EXPECT_EQ(box->Open(sealed, "p1_n2").status().code(), absl::StatusCode::kDataLoss);
  std::string tampered = sealed;
  tampered[10] = tampered[10] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(box->Open(tampered, "p1_n1").ok());
  EXPECT_EQ(box->Open("plain", "p1_n1").status().code(), absl::StatusCode::kInvalidArgument);
  auto other = SecretBox::FromKeyText(Base64Encode(std::string(32, '\x43')));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->Open(sealed, "p1_n1").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*box->Open(box->Seal("", "x"), "x"), "");
}

TEST(SecretBoxTest, RejectsBadKeys) {
  EXPECT_FALSE(SecretBox::FromKeyText("short").ok());
  EXPECT_FALSE(SecretBox::FromKeyText(std::string(64, 'z')).ok());
  EXPECT_FALSE(SecretBox::FromRawKey(std::string(31, 'k')).ok());
}

}  // namespace
}  // namespace iot::common
