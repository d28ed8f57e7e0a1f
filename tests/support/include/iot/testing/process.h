#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace iot::testing {

/// A child process for tests: started with posix_spawn, stdout/stderr to a log file, killed
/// (SIGKILL) on destruction if still running.
class Process {
 public:
  struct Options {
    std::vector<std::string> argv;
    /// Added to (and overriding) the parent's environment.
    std::map<std::string, std::string> env;
    /// Where stdout and stderr go; empty: inherit the test's.
    std::filesystem::path log_file;
    /// Run as this user (through `runuser -u`) when the test runs as root; empty: as is.
    std::string run_as_user;
  };

  explicit Process(Options options);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool running();
  /// Sends `signal` (default SIGTERM).
  void Signal(int signal);
  /// Waits for the exit; returns the exit code (128+signal when killed), nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  /// SIGTERM, then SIGKILL after `grace`. Returns the exit code.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  /// The log file's content (empty if none).
  [[nodiscard]] std::string Log() const;

 private:
  Options options_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read, close).
uint16_t FreePort();

/// True once something accepts TCP connections on 127.0.0.1:`port`, polling until `timeout`.
bool WaitForPort(uint16_t port, std::chrono::milliseconds timeout);

/// A fresh directory removed (recursively) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "iot-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Runs `argv` to completion (output to `log_file` if set); returns the exit code.
int RunCommand(const std::vector<std::string>& argv, const std::filesystem::path& log_file = {},
               const std::string& run_as_user = {});

/// The pause between two polls of WaitUntil (10 ms).
void PollPause();

/// Polls `condition` every 10 ms until it is true or `timeout` passes; returns its last value.
template <typename Condition>
bool WaitUntil(Condition&& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    PollPause();
  }
}

/// Load generators of a test (simulated gateways, devices): threads that loop until their work
/// is done or stop() says to give up. The destructor gives up and joins, so a test that returns
/// early on a failed assertion does not leave running threads behind (std::terminate).
class Workers {
 public:
  Workers() = default;
  ~Workers() {
    stop_ = true;
    Join();
  }
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  template <typename Fn>
  void Start(Fn&& fn) {
    threads_.emplace_back(std::forward<Fn>(fn));
  }
  /// True once the test gives up: a worker stops retrying.
  [[nodiscard]] bool stopping() const { return stop_; }
  /// Waits until every worker finished its work.
  void Join() {
    for (auto& t : threads_) {
      if (t.joinable()) {
        t.join();
      }
    }
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

/// Path of a built executable by target name: every executable lands in `<build>/bin`.
std::filesystem::path ExecutablePath(const std::string& target);

/// Path of a built shared library (e.g. the broker plugin) in `<build>/lib`.
std::filesystem::path LibraryPath(const std::string& file_name);

}  // namespace iot::testing
