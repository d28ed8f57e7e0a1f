#include "procstat.h"

#include <dirent.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

namespace iotbench {
namespace {

/// Socket inodes listening on `port` in /proc/net/tcp and tcp6.
std::vector<std::string> ListeningInodes(std::uint16_t port) {
  std::vector<std::string> inodes;
  const std::string port_hex = fmt::format(":{:04X}", port);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot;
      std::string local;
      std::string remote;
      std::string state;
      std::string skip;
      std::string inode;
      fields >> slot >> local >> remote >> state;
      for (int i = 0; i < 5; ++i) {  // tx_rx tr_when retrnsmt uid timeout
        fields >> skip;
      }
      fields >> inode;
      if (state == "0A" && local.size() > port_hex.size() &&
          local.compare(local.size() - port_hex.size(), port_hex.size(), port_hex) == 0) {
        inodes.push_back("socket:[" + inode + "]");
      }
    }
  }
  return inodes;
}

/// utime + stime of `pid` in clock ticks, nullopt when it is gone.
std::optional<std::uint64_t> CpuTicks(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text;
  if (!std::getline(in, text)) {
    return std::nullopt;
  }
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) {
    return std::nullopt;
  }
  std::istringstream fields(text.substr(paren + 1));
  std::string field;
  std::uint64_t utime = 0;
  std::uint64_t stime = 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  for (int index = 3; index <= 15 && fields >> field; ++index) {
    if (index == 14) {
      utime = std::stoull(field);
    } else if (index == 15) {
      stime = std::stoull(field);
    }
  }
  return utime + stime;
}

/// Busy and total ticks of the whole machine (/proc/stat "cpu" line).
std::pair<std::uint64_t, std::uint64_t> MachineTicks() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  std::uint64_t total = 0;
  std::uint64_t idle = 0;
  std::uint64_t value = 0;
  for (int i = 0; i < 8 && in >> value; ++i) {
    total += value;
    if (i == 3 || i == 4) {  // idle, iowait
      idle += value;
    }
  }
  return {total - idle, total};
}

}  // namespace

std::optional<pid_t> PidListeningOn(std::uint16_t port) {
  const auto inodes = ListeningInodes(port);
  if (inodes.empty()) {
    return std::nullopt;
  }
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) {
    return std::nullopt;
  }
  std::optional<pid_t> found;
  while (const dirent* entry = ::readdir(proc)) {
    const std::string name = entry->d_name;
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) {
      continue;
    }
    const std::string fd_dir = "/proc/" + name + "/fd";
    DIR* fds = ::opendir(fd_dir.c_str());
    if (fds == nullptr) {
      continue;
    }
    while (const dirent* fd = ::readdir(fds)) {
      char target[64] = {};
      const std::string link = fd_dir + "/" + fd->d_name;
      const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
      if (n > 0 && std::find(inodes.begin(), inodes.end(),
                             std::string(target, static_cast<std::size_t>(n))) != inodes.end()) {
        found = static_cast<pid_t>(std::stol(name));
        break;
      }
    }
    ::closedir(fds);
    if (found) {
      break;
    }
  }
  ::closedir(proc);
  return found;
}

std::optional<std::uint64_t> ResidentBytes(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stoull(line.substr(6)) * 1024;
    }
  }
  return std::nullopt;
}

nlohmann::json MachineInfo() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::string model;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return {{"nproc", std::thread::hardware_concurrency()}, {"cpu_model", model}};
}

CpuSampler::CpuSampler(std::vector<WatchedProcess> processes, std::chrono::milliseconds interval)
    : processes_(std::move(processes)), interval_(interval), thread_([this] { Run(); }) {}

CpuSampler::~CpuSampler() {
  stop_.store(true);
  thread_.join();
}

void CpuSampler::Run() {
  const double ticks_per_second = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::vector<std::optional<std::uint64_t>> last(processes_.size());
  for (std::size_t i = 0; i < processes_.size(); ++i) {
    last[i] = CpuTicks(processes_[i].pid);
  }
  auto last_machine = MachineTicks();
  auto last_at = Clock::now();
  while (!stop_.load()) {
    // Sleep in short steps so that the destructor does not wait a whole interval.
    const auto wake = last_at + interval_;
    while (!stop_.load() && Clock::now() < wake) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const auto now = Clock::now();
    const double elapsed = SecondsBetween(last_at, now);
    Sample sample{.at = now, .percent = {}, .machine_percent = 0};
    for (std::size_t i = 0; i < processes_.size(); ++i) {
      const auto ticks = CpuTicks(processes_[i].pid);
      double percent = 0;
      if (ticks && last[i] && elapsed > 0) {
        percent = 100.0 * static_cast<double>(*ticks - *last[i]) / ticks_per_second / elapsed;
      }
      sample.percent.push_back(percent);
      last[i] = ticks;
    }
    const auto machine = MachineTicks();
    if (machine.second > last_machine.second) {
      sample.machine_percent = 100.0 * static_cast<double>(std::thread::hardware_concurrency()) *
                               static_cast<double>(machine.first - last_machine.first) /
                               static_cast<double>(machine.second - last_machine.second);
    }
    last_machine = machine;
    last_at = now;
    const std::lock_guard lock(mutex_);
    samples_.push_back(std::move(sample));
  }
}

std::optional<double> CpuSampler::LatestPercent(const std::string& name) const {
  const std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < processes_.size(); ++i) {
    if (processes_[i].name == name && !samples_.empty()) {
      return samples_.back().percent[i];
    }
  }
  return std::nullopt;
}

nlohmann::json CpuSampler::Summary(Clock::time_point from, Clock::time_point to) const {
  std::vector<Sample> window;
  {
    const std::lock_guard lock(mutex_);
    for (const auto& sample : samples_) {
      if (sample.at > from && sample.at <= to + interval_) {
        window.push_back(sample);
      }
    }
  }
  nlohmann::json out = nlohmann::json::object();
  out["interval_ms"] = interval_.count();
  out["samples"] = window.size();
  if (window.empty()) {
    return out;
  }
  nlohmann::json per_process = nlohmann::json::object();
  std::vector<std::pair<double, std::string>> saturated;
  for (std::size_t i = 0; i < processes_.size(); ++i) {
    double sum = 0;
    double max = 0;
    for (const auto& sample : window) {
      sum += sample.percent[i];
      max = std::max(max, sample.percent[i]);
    }
    const double avg = sum / static_cast<double>(window.size());
    per_process[processes_[i].name] = {{"pid", processes_[i].pid},
                                       {"avg_cpu_percent", Round(avg)},
                                       {"max_cpu_percent", Round(max)}};
    if (avg >= 85 || max >= 95) {
      saturated.emplace_back(avg, processes_[i].name);
    }
  }
  double machine = 0;
  for (const auto& sample : window) {
    machine += sample.machine_percent;
  }
  std::sort(saturated.rbegin(), saturated.rend());
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [avg, name] : saturated) {
    names.push_back(name);
  }
  out["processes"] = per_process;
  double watched = 0;
  for (const auto& [name, figures] : per_process.items()) {
    watched += figures["avg_cpu_percent"].get<double>();
  }
  out["machine_cpu_percent"] = Round(machine / static_cast<double>(window.size()));
  // What else ran on the machine meanwhile (compilers, other stacks): it bounds the figures too.
  out["other_processes_cpu_percent"] =
      Round(std::max(0.0, machine / static_cast<double>(window.size()) - watched));
  out["machine_cpu_capacity_percent"] = 100 * std::thread::hardware_concurrency();
  out["saturated"] = std::move(names);
  return out;
}

}  // namespace iotbench
