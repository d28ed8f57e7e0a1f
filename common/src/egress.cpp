#include "iot/common/egress.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace iot::common {
namespace {

IpAddress V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddress out;
  out.bytes[0] = a;
  out.bytes[1] = b;
  out.bytes[2] = c;
  out.bytes[3] = d;
  return out;
}

IpAddress EmbeddedV4(const IpAddress& v6, size_t offset) {
  return V4(v6.bytes[offset], v6.bytes[offset + 1], v6.bytes[offset + 2], v6.bytes[offset + 3]);
}

bool StartsWith(const IpAddress& a, std::initializer_list<uint8_t> prefix) {
  size_t i = 0;
  for (uint8_t b : prefix) {
    if (a.bytes[i++] != b) {
      return false;
    }
  }
  return true;
}

bool ZeroBytes(const IpAddress& a, size_t from, size_t to) {
  return std::all_of(a.bytes.begin() + static_cast<std::ptrdiff_t>(from),
                     a.bytes.begin() + static_cast<std::ptrdiff_t>(to),
                     [](uint8_t b) { return b == 0; });
}

bool IsV4Mapped(const IpAddress& a) {
  return a.v6 && ZeroBytes(a, 0, 10) && a.bytes[10] == 0xFF && a.bytes[11] == 0xFF;
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are (one form to compare).
IpAddress Normalized(const IpAddress& a) { return IsV4Mapped(a) ? EmbeddedV4(a, 12) : a; }

std::optional<std::string_view> SpecialV4(const IpAddress& a) {
  const auto* b = a.bytes.data();
  if (b[0] == 0) {
    return "unspecified (0.0.0.0/8)";
  }
  if (b[0] == 127) {
    return "loopback";
  }
  if (b[0] == 10 || (b[0] == 172 && (b[1] & 0xF0) == 16) || (b[0] == 192 && b[1] == 168)) {
    return "private (RFC 1918)";
  }
  if (b[0] == 100 && (b[1] & 0xC0) == 64) {
    return "carrier-grade NAT (100.64.0.0/10)";
  }
  if (b[0] == 169 && b[1] == 254) {
    return "link-local";
  }
  if (b[0] == 192 && b[1] == 0 && b[2] == 0) {
    return "IETF protocol assignment (192.0.0.0/24)";
  }
  if ((b[0] == 192 && b[1] == 0 && b[2] == 2) || (b[0] == 198 && b[1] == 51 && b[2] == 100) ||
      (b[0] == 203 && b[1] == 0 && b[2] == 113)) {
    return "documentation";
  }
  if (b[0] == 192 && b[1] == 88 && b[2] == 99) {
    return "6to4 relay anycast";
  }
  if (b[0] == 198 && (b[1] & 0xFE) == 18) {
    return "benchmarking (198.18.0.0/15)";
  }
  if (b[0] >= 224 && b[0] < 240) {
    return "multicast";
  }
  if (b[0] >= 240) {
    return "reserved or broadcast (240.0.0.0/4)";
  }
  return std::nullopt;
}

std::optional<std::string_view> SpecialV6(const IpAddress& a) {
  if (IsV4Mapped(a)) {
    return SpecialV4(EmbeddedV4(a, 12));
  }
  if (ZeroBytes(a, 0, 12)) {  // ::/96: ::, ::1 and the deprecated IPv4-compatible form
    if (ZeroBytes(a, 12, 15) && a.bytes[15] <= 1) {
      return a.bytes[15] == 0 ? "unspecified (::)" : "loopback";
    }
    return "IPv4-compatible IPv6 (deprecated)";
  }
  if (StartsWith(a, {0x00, 0x64, 0xFF, 0x9B}) && ZeroBytes(a, 4, 12)) {  // NAT64 64:ff9b::/96
    return SpecialV4(EmbeddedV4(a, 12));
  }
  if (StartsWith(a, {0x00, 0x64, 0xFF, 0x9B, 0x00, 0x01})) {
    return "local-use NAT64 (64:ff9b:1::/48)";
  }
  if (StartsWith(a, {0x01, 0x00}) && ZeroBytes(a, 2, 8)) {
    return "discard-only (100::/64)";
  }
  if (StartsWith(a, {0x20, 0x01, 0x0D, 0xB8})) {
    return "documentation";
  }
  if (a.bytes[0] == 0x20 && a.bytes[1] == 0x01 && a.bytes[2] < 0x02) {
    return "IETF protocol assignment (2001::/23, Teredo)";
  }
  if (StartsWith(a, {0x20, 0x02})) {  // 6to4: the IPv4 address is bytes 2..5
    return SpecialV4(EmbeddedV4(a, 2));
  }
  if ((a.bytes[0] & 0xFE) == 0xFC) {
    return "unique local (fc00::/7)";
  }
  if (a.bytes[0] == 0xFE && (a.bytes[1] & 0xC0) == 0x80) {
    return "link-local";
  }
  if (a.bytes[0] == 0xFE && (a.bytes[1] & 0xC0) == 0xC0) {
    return "site-local (deprecated)";
  }
  if (a.bytes[0] == 0xFF) {
    return "multicast";
  }
  return std::nullopt;
}

std::optional<IpAddress> FromSockaddr(const sockaddr* sa) {
  IpAddress out;
  if (sa == nullptr) {
    return std::nullopt;
  }
  if (sa->sa_family == AF_INET) {
    sockaddr_in in{};
    std::memcpy(&in, sa, sizeof in);
    std::memcpy(out.bytes.data(), &in.sin_addr, 4);
    return out;
  }
  if (sa->sa_family == AF_INET6) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, sa, sizeof in6);
    out.v6 = true;
    std::memcpy(out.bytes.data(), &in6.sin6_addr, 16);
    return out;
  }
  return std::nullopt;
}

std::vector<IpAddress> LocalInterfaceAddresses() {
  std::vector<IpAddress> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return out;
  }
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (auto a = FromSockaddr(i->ifa_addr)) {
      out.push_back(Normalized(*a));
    }
  }
  freeifaddrs(list);
  return out;
}

}  // namespace

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  const std::string s(text);
  IpAddress out;
  if (inet_pton(AF_INET, s.c_str(), out.bytes.data()) == 1) {
    return out;
  }
  if (inet_pton(AF_INET6, s.c_str(), out.bytes.data()) == 1) {
    out.v6 = true;
    return out;
  }
  return std::nullopt;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
  return buf;
}

absl::StatusOr<IpNetwork> IpNetwork::Parse(std::string_view text) {
  const size_t slash = text.find('/');
  const auto address = IpAddress::Parse(text.substr(0, slash));
  if (!address) {
    return absl::InvalidArgumentError(fmt::format("'{}' is not an IP address or network", text));
  }
  const int bits = address->v6 ? 128 : 32;
  int prefix = bits;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || ec != std::errc{} || end != p.data() + p.size() || prefix < 0 ||
        prefix > bits) {
      return absl::InvalidArgumentError(
          fmt::format("'{}': the prefix length must be 0..{}", text, bits));
    }
  }
  return IpNetwork{.base = *address, .prefix = prefix};
}

bool IpNetwork::Contains(const IpAddress& address) const {
  const IpAddress a = base.v6 ? address : Normalized(address);
  if (a.v6 != base.v6) {
    return false;
  }
  const int full = prefix / 8;
  for (int i = 0; i < full; ++i) {
    if (a.bytes[static_cast<size_t>(i)] != base.bytes[static_cast<size_t>(i)]) {
      return false;
    }
  }
  if (const int rest = prefix % 8; rest != 0) {
    const auto mask = static_cast<uint8_t>(0xFF << (8 - rest));
    const auto i = static_cast<size_t>(full);
    return (a.bytes[i] & mask) == (base.bytes[i] & mask);
  }
  return true;
}

absl::StatusOr<std::vector<IpNetwork>> ParseNetworkList(std::string_view text) {
  std::vector<IpNetwork> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    std::string_view entry = text.substr(pos, comma - pos);
    while (!entry.empty() && entry.front() == ' ') {
      entry.remove_prefix(1);
    }
    while (!entry.empty() && entry.back() == ' ') {
      entry.remove_suffix(1);
    }
    if (!entry.empty()) {
      auto network = IpNetwork::Parse(entry);
      if (!network.ok()) {
        return network.status();
      }
      out.push_back(*network);
    }
    pos = comma + 1;
  }
  return out;
}

std::optional<std::string_view> SpecialPurpose(const IpAddress& address) {
  return address.v6 ? SpecialV6(address) : SpecialV4(address);
}

bool IsHostName(std::string_view host) {
  if (IpAddress::Parse(host)) {
    return true;
  }
  if (host.empty() || host.size() > 253) {
    return false;
  }
  return std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
  });
}

EgressPolicy::EgressPolicy(Options options) : options_(std::move(options)) {
  if (!options_.resolver) {
    options_.resolver = SystemResolve;
  }
}

absl::StatusOr<std::vector<IpAddress>> EgressPolicy::SystemResolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &list);
  if (rc != 0) {
    return absl::UnavailableError(
        fmt::format("cannot resolve '{}': {}", host,
                    rc == EAI_NONAME ? "no such host" : std::string(gai_strerror(rc))));
  }
  std::vector<IpAddress> out;
  for (addrinfo* i = list; i != nullptr; i = i->ai_next) {
    if (auto a = FromSockaddr(i->ai_addr);
        a && std::find(out.begin(), out.end(), *a) == out.end()) {
      out.push_back(*a);
    }
  }
  freeaddrinfo(list);
  if (out.empty()) {
    return absl::UnavailableError(fmt::format("cannot resolve '{}': no address", host));
  }
  return out;
}

void EgressPolicy::RefreshPlatformAddresses() const {
  const auto now = std::chrono::steady_clock::now();
  if (platform_resolved_ != std::chrono::steady_clock::time_point{} &&
      now - platform_resolved_ < options_.platform_refresh) {
    return;
  }
  std::vector<IpAddress> addresses;
  if (options_.refuse_local_interfaces) {
    addresses = LocalInterfaceAddresses();
  }
  for (const std::string& host : options_.platform_hosts) {
    if (auto literal = IpAddress::Parse(host)) {
      addresses.push_back(Normalized(*literal));
    } else if (auto resolved = options_.resolver(host); resolved.ok()) {
      for (const IpAddress& a : *resolved) {
        addresses.push_back(Normalized(a));
      }
    }
  }
  platform_ = std::move(addresses);
  platform_resolved_ = now;
}

std::optional<std::string> EgressPolicy::Refusal(const IpAddress& address) const {
  for (const IpNetwork& allowed : options_.allow) {
    if (allowed.Contains(address)) {
      return std::nullopt;
    }
  }
  if (auto special = SpecialPurpose(address)) {
    return fmt::format("{} is a {} address", address.ToString(), *special);
  }
  std::lock_guard lock(mu_);
  RefreshPlatformAddresses();
  const IpAddress normalized = Normalized(address);
  if (std::find(platform_.begin(), platform_.end(), normalized) != platform_.end()) {
    return fmt::format("{} is an address of the platform itself", address.ToString());
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<IpAddress>> EgressPolicy::Resolve(std::string_view host) const {
  if (!IsHostName(host)) {
    return absl::InvalidArgumentError(fmt::format("'{}' is not a host name or IP address", host));
  }
  if (auto literal = IpAddress::Parse(host)) {
    if (auto why = Refusal(*literal)) {
      return absl::PermissionDeniedError(*why);
    }
    return std::vector<IpAddress>{*literal};
  }
  auto resolved = options_.resolver(std::string(host));
  if (!resolved.ok()) {
    return resolved.status();
  }
  if (resolved->empty()) {
    return absl::UnavailableError(fmt::format("cannot resolve '{}': no address", host));
  }
  for (const IpAddress& a : *resolved) {
    if (auto why = Refusal(a)) {
      return absl::PermissionDeniedError(fmt::format("'{}' resolves to {}", host, *why));
    }
  }
  return resolved;
}

}  // namespace iot::common
