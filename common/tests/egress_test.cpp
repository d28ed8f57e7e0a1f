#include "iot/common/egress.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

namespace iot::common {
namespace {

using ::testing::HasSubstr;

IpAddress Ip(std::string_view text) { return *IpAddress::Parse(text); }

TEST(EgressTest, SpecialPurposeAddressesAreNamed) {
  const std::map<std::string, std::string> special = {
      {"127.0.0.1", "loopback"},
      {"127.255.0.9", "loopback"},
      {"0.0.0.0", "unspecified"},
      {"0.1.2.3", "unspecified"},
      {"10.1.2.3", "private"},
      {"172.16.0.1", "private"},
      {"172.31.255.255", "private"},
      {"192.168.1.1", "private"},
      {"100.64.0.1", "carrier-grade NAT"},
      {"100.127.255.255", "carrier-grade NAT"},
      {"169.254.169.254", "link-local"},  // cloud metadata services
      {"192.0.0.8", "IETF"},
      {"192.0.2.1", "documentation"},
      {"198.18.0.1", "benchmarking"},
      {"224.0.0.1", "multicast"},
      {"255.255.255.255", "broadcast"},
      {"::", "unspecified"},
      {"::1", "loopback"},
      {"::127.0.0.1", "IPv4-compatible"},
      {"::ffff:127.0.0.1", "loopback"},  // IPv4-mapped: judged by the IPv4 address
      {"::ffff:10.0.0.1", "private"},
      {"::ffff:169.254.169.254", "link-local"},
      {"64:ff9b::10.0.0.1", "private"},  // NAT64 of a private address
      {"64:ff9b:1::1", "NAT64"},
      {"2002:7f00:1::", "loopback"},  // 6to4 of 127.0.0.1
      {"2002:c0a8:101::1", "private"},
      {"2001::1", "Teredo"},
      {"2001:db8::1", "documentation"},
      {"fc00::1", "unique local"},
      {"fd12:3456::1", "unique local"},
      {"fe80::1", "link-local"},
      {"fec0::1", "site-local"},
      {"ff02::1", "multicast"},
      {"100::1", "discard"},
  };
  for (const auto& [text, why] : special) {
    auto reason = SpecialPurpose(Ip(text));
    ASSERT_TRUE(reason.has_value()) << text;
    EXPECT_THAT(std::string(*reason), HasSubstr(why)) << text;
  }
  for (const char* text :
       {"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "192.169.0.1", "2606:4700:4700::1111",
        "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"}) {
    EXPECT_FALSE(SpecialPurpose(Ip(text)).has_value()) << text;
  }
}

TEST(EgressTest, NetworksParseAndMatchBothFamilies) {
  auto list = ParseNetworkList(" 127.0.0.1/32, 10.0.0.0/8 ,fd00::/8,192.0.2.7");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 4u);
  EXPECT_TRUE((*list)[0].Contains(Ip("127.0.0.1")));
  EXPECT_TRUE((*list)[0].Contains(Ip("::ffff:127.0.0.1")));
  EXPECT_FALSE((*list)[0].Contains(Ip("127.0.0.2")));
  EXPECT_TRUE((*list)[1].Contains(Ip("10.200.3.4")));
  EXPECT_FALSE((*list)[1].Contains(Ip("11.0.0.1")));
  EXPECT_TRUE((*list)[2].Contains(Ip("fd12::1")));
  EXPECT_FALSE((*list)[2].Contains(Ip("fc12::1")));
  EXPECT_TRUE((*list)[3].Contains(Ip("192.0.2.7")));
  EXPECT_EQ((*list)[3].prefix, 32);
  EXPECT_TRUE(ParseNetworkList("").ok());
  EXPECT_TRUE(ParseNetworkList("0.0.0.0/0")->front().Contains(Ip("8.8.8.8")));
  for (const char* bad :
       {"10.0.0.0/33", "::/129", "localhost", "10.0.0.0/", "10.0.0.0/x", "127.1", "1.2.3.4,nope"}) {
    EXPECT_FALSE(ParseNetworkList(bad).ok()) << bad;
  }
}

TEST(EgressTest, EveryResolvedAddressIsCheckedAndOneRefusedRefusesTheHost) {
  std::map<std::string, std::vector<IpAddress>> dns = {
      {"public.example", {Ip("93.184.216.34"), Ip("2606:2800:220:1::1")}},
      {"mixed.example", {Ip("93.184.216.34"), Ip("10.0.0.5")}},
      {"metadata.example", {Ip("::ffff:169.254.169.254")}},
  };
  EgressPolicy policy(
      {.allow = {},
       .platform_hosts = {},
       .refuse_local_interfaces = false,
       .resolver = [&](const std::string& host) -> absl::StatusOr<std::vector<IpAddress>> {
         auto it = dns.find(host);
         if (it == dns.end()) {
           return absl::UnavailableError("no such host");
         }
         return it->second;
       },
       .platform_refresh = std::chrono::seconds(60)});
  auto ok = policy.Resolve("public.example");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), 2u);
  auto mixed = policy.Resolve("mixed.example");
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(mixed.status().message()), HasSubstr("10.0.0.5 is a private"));
  EXPECT_EQ(policy.Resolve("metadata.example").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(policy.Resolve("127.0.0.1").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(policy.Resolve("::1").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(policy.Resolve("8.8.8.8")->front(), Ip("8.8.8.8"));
  EXPECT_EQ(policy.Resolve("nowhere.example").status().code(), absl::StatusCode::kUnavailable);
  for (const char* bad : {"", "a/b", "host name", "%2Ftmp", "h1,h2", "fe80::1%eth0"}) {
    EXPECT_EQ(policy.Resolve(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(EgressTest, TheAllowListOpensSpecialAndPlatformAddresses) {
  EgressPolicy policy(
      {.allow = *ParseNetworkList("127.0.0.1/32,10.1.0.0/16,203.0.113.9"),
       .platform_hosts = {"203.0.113.9", "198.51.100.1", "pg.internal"},
       .refuse_local_interfaces = false,
       .resolver = [](const std::string& host) -> absl::StatusOr<std::vector<IpAddress>> {
         if (host == "pg.internal") {
           return std::vector<IpAddress>{Ip("8.8.4.4")};
         }
         return absl::UnavailableError("no such host");
       },
       .platform_refresh = std::chrono::seconds(60)});
  EXPECT_FALSE(policy.Refusal(Ip("127.0.0.1")).has_value());
  EXPECT_FALSE(policy.Refusal(Ip("::ffff:127.0.0.1")).has_value());
  EXPECT_TRUE(policy.Refusal(Ip("127.0.0.2")).has_value());
  EXPECT_TRUE(policy.Refusal(Ip("::1")).has_value());
  EXPECT_FALSE(policy.Refusal(Ip("10.1.7.7")).has_value());
  EXPECT_TRUE(policy.Refusal(Ip("10.2.0.1")).has_value());
  // The platform's own (public) addresses: refused unless allowed.
  EXPECT_FALSE(policy.Refusal(Ip("203.0.113.9")).has_value());
  auto own = policy.Refusal(Ip("8.8.4.4"));
  ASSERT_TRUE(own.has_value());
  EXPECT_THAT(*own, HasSubstr("of the platform itself"));
  EXPECT_TRUE(policy.Refusal(Ip("::ffff:8.8.4.4")).has_value());
  EXPECT_FALSE(policy.Refusal(Ip("8.8.8.8")).has_value());
}

TEST(EgressTest, ThisHostsOwnAddressesAreRefused) {
  EgressPolicy policy({.allow = {},
                       .platform_hosts = {},
                       .refuse_local_interfaces = true,
                       .resolver = {},
                       .platform_refresh = std::chrono::seconds(60)});
  // Loopback is refused anyway; every interface address of this host is too, public or not.
  EXPECT_TRUE(policy.Refusal(Ip("127.0.0.1")).has_value());
  EXPECT_TRUE(policy.Refusal(Ip("::1")).has_value());
  EXPECT_FALSE(policy.Refusal(Ip("8.8.8.8")).has_value());
}

}  // namespace
}  // namespace iot::common
