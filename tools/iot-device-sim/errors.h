#pragma once

#include <stdexcept>
#include <string>

namespace devsim {

/// Exit codes of iot-device-sim.
enum ExitCode : int {
  kExitOk = 0,
  kExitRuntime = 1,      ///< a device failed, a server answered with an error
  kExitUsage = 2,        ///< bad command line or input file
  kExitUnreachable = 3,  ///< thing-model or the broker could not be reached
};

/// Ends the run with `code`, printing `error: <message>`.
class Failure : public std::runtime_error {
 public:
  Failure(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  [[nodiscard]] int code() const { return code_; }

 private:
  int code_;
};

}  // namespace devsim
