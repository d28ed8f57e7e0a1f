#pragma once

// A connect storm for the broker benchmark: raw MQTT 3.1.1 CONNECTs over non-blocking sockets
// from one epoll thread, `window` connects in flight. The client side costs a few microseconds
// per connect, so the broker, not the bench, bounds the figure.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace iot::broker_bench {

struct StormClient {
  std::string client_id;
  std::optional<std::string> username;
  std::optional<std::string> password;
};

struct StormResult {
  int accepted = 0;
  int refused = 0;  ///< CONNACK with a non-zero code, or closed/timed out without one.
  /// Connects per second, first connect to last CONNACK.
  double per_second = 0;
  std::chrono::microseconds p50{0};
  std::chrono::microseconds p99{0};
  /// Every accepted connect's latency, sorted.
  std::vector<std::chrono::microseconds> latencies;
};

/// The MQTT 3.1.1 CONNECT packet (clean session, keep-alive 60 s).
std::string ConnectPacket(const StormClient& client);

/// Connects every client to 127.0.0.1:`port`, at most `window` awaiting their CONNACK at a
/// time. Accepted connections stay open until all clients are done (and `hold`, when given, has
/// returned: e.g. to measure the broker's memory with them connected), then all are closed.
/// One socket per client: ten thousand connections fit where libmosquitto clients (three
/// descriptors each) would not.
StormResult ConnectStorm(uint16_t port, const std::vector<StormClient>& clients, int window,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30),
                         const std::function<void(const StormResult&)>& hold = {});

struct FloodResult {
  int64_t started = 0;   ///< CONNECTs sent
  int64_t finished = 0;  ///< answered (CONNACK) or closed by the broker
  int64_t accepted = 0;  ///< CONNACK 0: should stay 0 for made-up devices
  double seconds = 0;
};

/// Bogus connects from `source_address` (e.g. 127.0.0.2) to 127.0.0.1:`port`, paced at
/// `per_second` with at most `window` in flight, each with a new well-formed client id of a device
/// that does not exist (`{prefix}{n}_0_0_{hour}`, a password that cannot match), until `stop`
/// returns true. Each connection is closed once the broker answered.
FloodResult Flood(uint16_t port, const std::string& source_address, const std::string& prefix,
                  double per_second, int window, const std::function<bool()>& stop);

}  // namespace iot::broker_bench
