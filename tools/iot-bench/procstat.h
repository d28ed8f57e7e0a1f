#pragma once

// What the bench learns about the platform's processes from /proc: which process listens on a
// port, its resident memory, and its CPU use sampled every 500 ms while a scenario runs (so the
// report can say which process saturates a core).

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "stats.h"

namespace iotbench {

/// The pid of the process listening on TCP `port` (IPv4 or IPv6), if this user can see it.
std::optional<pid_t> PidListeningOn(std::uint16_t port);

/// Resident set size of `pid` in bytes (VmRSS), nullopt when it is gone.
std::optional<std::uint64_t> ResidentBytes(pid_t pid);

/// CPU model (first "model name" of /proc/cpuinfo) and core count, for the report.
nlohmann::json MachineInfo();

struct WatchedProcess {
  std::string name;  ///< e.g. "mosquitto", "device-gateway", "iot-bench"
  pid_t pid = 0;
};

/// Samples user+system CPU time of each watched process every `interval` on its own thread.
/// 100 % = one core busy.
class CpuSampler {
 public:
  CpuSampler(std::vector<WatchedProcess> processes, std::chrono::milliseconds interval);
  ~CpuSampler();
  CpuSampler(const CpuSampler&) = delete;
  CpuSampler& operator=(const CpuSampler&) = delete;

  /// Per process over [from, to]: {"pid","avg_cpu_percent","max_cpu_percent"}, the machine's
  /// total ("machine_cpu_percent", 100 per core), what processes not watched used
  /// ("other_processes_cpu_percent"), and "saturated": processes that kept a core busy
  /// (average >= 85 % or a sample >= 95 %), busiest first.
  [[nodiscard]] nlohmann::json Summary(Clock::time_point from, Clock::time_point to) const;
  /// CPU % of the process named `name` in the latest sample; nullopt before the first sample
  /// or for an unknown name.
  [[nodiscard]] std::optional<double> LatestPercent(const std::string& name) const;
  [[nodiscard]] const std::vector<WatchedProcess>& processes() const { return processes_; }

 private:
  struct Sample {
    Clock::time_point at;
    std::vector<double> percent;  ///< per process, over the interval ending at `at`
    double machine_percent = 0;
  };

  void Run();

  std::vector<WatchedProcess> processes_;
  std::chrono::milliseconds interval_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Sample> samples_;
  std::thread thread_;
};

}  // namespace iotbench
