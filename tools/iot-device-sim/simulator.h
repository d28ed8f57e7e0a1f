#pragma once

// The simulated devices: one libmosquitto client (MQTT 3.1.1) per device, driven by worker
// threads of up to kDevicesPerWorker devices each (poll() over their sockets, then
// mosquitto_loop on the ready ones; publishes happen on the same thread).

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "iot/thing_model/product_model.h"
#include "provision.h"

namespace devsim {

inline constexpr std::size_t kDevicesPerWorker = 250;

struct SimOptions {
  std::string host = "127.0.0.1";
  int port = 1883;
  double report_interval_seconds = 10;
  /// A writable number property that states the report interval: it starts out as
  /// report_interval_seconds (see DeviceValues). "" = none.
  std::string interval_property = "report_interval";
  int count = 0;  ///< reports per device; 0 = until stopped
  int response_delay_ms = 0;
  double failure_rate = 0;
  bool shadow_get = false;
  std::string message_up;  ///< empty: none
  std::string event_type;  ///< empty: none
  int keepalive_seconds = 60;
  double drain_seconds = 10;  ///< how long a finishing device waits for its PUBACKs
  int max_connect_attempts = 5;
  std::uint64_t seed = 0;  ///< 0: random
};

/// Counters of a run (all devices).
struct SimStats {
  std::atomic<std::uint64_t> devices{0};
  std::atomic<std::uint64_t> connected{0};  ///< devices that connected at least once
  std::atomic<std::uint64_t> connects{0};   ///< successful CONNACKs, reconnects included
  std::atomic<std::uint64_t> connect_failures{0};
  std::atomic<std::uint64_t> disconnects{0};  ///< connections lost unexpectedly
  std::atomic<std::uint64_t> reports_sent{0};
  std::atomic<std::uint64_t> reports_acked{0};
  std::atomic<std::uint64_t> commands_answered{0};
  std::atomic<std::uint64_t> property_sets_answered{0};
  std::atomic<std::uint64_t> property_gets_answered{0};
  std::atomic<std::uint64_t> simulated_failures{0};
  std::atomic<std::uint64_t> shadow_gets_sent{0};
  std::atomic<std::uint64_t> shadow_responses{0};
  std::atomic<std::uint64_t> messages_sent{0};
  std::atomic<std::uint64_t> events_sent{0};
  std::atomic<std::uint64_t> other_downlink{0};
  std::atomic<std::uint64_t> errors{0};
  /// No device could open a TCP connection to the broker.
  std::atomic<bool> broker_unreachable{false};
};

/// Runs `devices` until each has sent `count` reports (and had them acknowledged) or `stop`
/// becomes true; returns when every device has disconnected.
void RunSimulation(const SimOptions& options,
                   std::shared_ptr<const iot::thing_model::ProductModel> model,
                   const std::vector<DeviceCredentials>& devices, const std::atomic<bool>& stop,
                   SimStats& stats);

}  // namespace devsim
