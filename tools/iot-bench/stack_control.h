#pragma once

// How the faults scenario hurts the stack: it finds a component's processes by the TCP port
// the component listens on (PostgreSQL: the postmaster and every process it started), sends
// them a signal, waits until they are gone and runs the restart command (scripts/stack.sh
// start: it starts whatever of the stack is not running, on the ports it had, and waits until
// it is ready).

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "stats.h"

namespace iotbench {

/// One fault of the matrix, e.g. "device-gateway:kill" or "redis:term".
struct FaultSpec {
  std::string name;    ///< as given: "{target}:{kill|term}"
  std::string target;  ///< thing-model, device-gateway, shadow, command-dispatch,
                       ///< rule-forwarding, mosquitto, redis or postgres
  int signal = 0;      ///< SIGKILL or SIGTERM
  /// The loss of this fault is bounded by the shipped configuration instead of 0 (SIGKILL of
  /// Mosquitto: its autosave; SIGKILL of Redis: its AOF fsync policy; docs/deploy.md).
  bool bounded = false;
};

/// Parses "{target}:{kill|term}"; INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<FaultSpec> ParseFault(const std::string& text);

/// The matrix of issue #14 in its order: every service SIGKILLed, PostgreSQL SIGKILLed, Redis
/// and Mosquitto SIGTERMed, then SIGKILLed.
std::vector<std::string> DefaultFaults();

struct InjectResult {
  std::vector<pid_t> pids;  ///< signalled (PostgreSQL: the postmaster first)
  std::int64_t signalled_unix_ms = 0;
  double gone_s = 0;           ///< signal .. every process gone
  double restart_s = 0;        ///< gone .. the restart command returned
  bool escalated = false;      ///< SIGTERM did not end it in time: SIGKILLed
  int restart_exit = 0;        ///< the restart command's exit code
  std::string restart_output;  ///< its last lines, when it failed
};

class StackControl {
 public:
  /// `ports`: the TCP port of each target; `restart_command`: run with /bin/sh -c.
  StackControl(std::map<std::string, std::uint16_t> ports, std::string restart_command);

  /// OK when `target`'s port is known and something listens there.
  [[nodiscard]] absl::Status Check(const std::string& target) const;
  /// The processes of `target` now (the listener first).
  [[nodiscard]] absl::StatusOr<std::vector<pid_t>> Processes(const std::string& target) const;
  /// Signals `fault.target`'s processes, waits until they are gone (SIGTERM: at most
  /// `term_grace`, then SIGKILL), then runs the restart command.
  absl::StatusOr<InjectResult> Inject(const FaultSpec& fault, std::chrono::seconds term_grace);

 private:
  std::map<std::string, std::uint16_t> ports_;
  std::string restart_command_;
};

/// Runs `command` with /bin/sh -c, none of this process's descriptors inherited (a server the
/// command starts must not hold the bench's sockets); returns the exit code and the output
/// (stdout and stderr, the last `keep` bytes).
std::pair<int, std::string> RunShell(const std::string& command, std::size_t keep = 4000);

/// True while `pid` exists and is not a zombie.
bool ProcessAlive(pid_t pid);

/// The samples of counter `name` on the Prometheus page at http://`address`/metrics
/// (`host:port`), by their `label`'s value, e.g. iot_gateway_uplink_rejected_total by reason.
absl::StatusOr<std::map<std::string, double>> ScrapeCounter(const std::string& address,
                                                            const std::string& name,
                                                            const std::string& label);

}  // namespace iotbench
