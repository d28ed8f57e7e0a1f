#pragma once

// Where the platform may open connections on a tenant's behalf (rule actions: webhook,
// PostgreSQL, ...): public internet addresses only. Loopback, private, link-local, CGNAT,
// unspecified, multicast and other special-purpose ranges, and the addresses of the platform's
// own services and of this host, are refused unless the operator's allow-list names them.
// A host name is resolved here and every address it resolves to is checked; the caller then
// connects to one of the checked addresses (never resolves the name again), so a DNS answer
// that changes between the check and the connect (DNS rebinding) cannot redirect it.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace iot::common {

/// An IPv4 or IPv6 address.
struct IpAddress {
  bool v6 = false;
  /// IPv4: the first 4 bytes.
  std::array<uint8_t, 16> bytes{};

  /// Strict textual form (inet_pton): `192.0.2.1`, `2001:db8::1`; nullopt otherwise.
  static std::optional<IpAddress> Parse(std::string_view text);
  [[nodiscard]] std::string ToString() const;
  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

/// `address/prefix` (a bare address is /32 or /128).
struct IpNetwork {
  IpAddress base;
  int prefix = 0;

  static absl::StatusOr<IpNetwork> Parse(std::string_view text);
  /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match IPv4 networks.
  [[nodiscard]] bool Contains(const IpAddress& address) const;
};

/// A comma-separated list of networks (the operator's allow-list); INVALID_ARGUMENT naming the
/// entry that does not parse.
absl::StatusOr<std::vector<IpNetwork>> ParseNetworkList(std::string_view text);

/// Why `address` is not a public internet address ("loopback", "private (RFC 1918)", ...);
/// nullopt for a public one. IPv6 forms that embed an IPv4 address (IPv4-mapped, NAT64, 6to4)
/// are judged by the embedded address.
std::optional<std::string_view> SpecialPurpose(const IpAddress& address);

class EgressPolicy {
 public:
  /// All addresses of a host name; UNAVAILABLE when it does not resolve.
  using Resolver = std::function<absl::StatusOr<std::vector<IpAddress>>(const std::string& host)>;

  struct Options {
    /// Networks the operator allows although they are special-purpose or the platform's own.
    std::vector<IpNetwork> allow;
    /// Hosts (names or addresses) of the platform's own services: their addresses are refused.
    std::vector<std::string> platform_hosts;
    /// Refuse this host's own interface addresses too (getifaddrs).
    bool refuse_local_interfaces = true;
    /// Default: getaddrinfo.
    Resolver resolver;
    /// How long the platform's resolved addresses are kept before they are resolved again.
    std::chrono::seconds platform_refresh{60};
  };

  explicit EgressPolicy(Options options);

  /// nullopt when a connection to `address` is allowed; otherwise why not, naming it
  /// ("127.0.0.1 is a loopback address").
  [[nodiscard]] std::optional<std::string> Refusal(const IpAddress& address) const;

  /// Resolves `host` (a name or an address literal) and checks every address it resolves to.
  /// All of them when all are allowed; PERMISSION_DENIED naming the first refused one (one
  /// refused address refuses the host); UNAVAILABLE when the name does not resolve;
  /// INVALID_ARGUMENT when `host` is not a host name or address at all.
  [[nodiscard]] absl::StatusOr<std::vector<IpAddress>> Resolve(std::string_view host) const;

  /// The system resolver (getaddrinfo, TCP addresses of both families).
  static absl::StatusOr<std::vector<IpAddress>> SystemResolve(const std::string& host);

 private:
  void RefreshPlatformAddresses() const;

  Options options_;
  mutable std::mutex mu_;
  mutable std::vector<IpAddress> platform_;
  mutable std::chrono::steady_clock::time_point platform_resolved_{};
};

/// A host name (letters, digits, '-', '.', '_'; at most 253 characters) or an IP literal.
bool IsHostName(std::string_view host);

}  // namespace iot::common
