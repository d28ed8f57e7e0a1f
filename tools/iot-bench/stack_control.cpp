#include "stack_control.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "iot/common/url.h"
#include "procstat.h"

namespace iotbench {
namespace {

const std::set<std::string> kTargets = {
    "thing-model",     "device-gateway", "shadow", "command-dispatch",
    "rule-forwarding", "mosquitto",      "redis",  "postgres"};

/// State letter and parent of `pid` from /proc/<pid>/stat; nullopt when it is gone.
std::optional<std::pair<char, pid_t>> StatOf(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text;
  if (!std::getline(in, text)) {
    return std::nullopt;
  }
  const auto paren = text.rfind(')');
  if (paren == std::string::npos || paren + 4 >= text.size()) {
    return std::nullopt;
  }
  // ") S 1234 ..." : state, then the parent's pid.
  return std::pair{text[paren + 2], static_cast<pid_t>(std::atol(text.c_str() + paren + 4))};
}

/// Every process whose parent is `parent`.
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) {
    return children;
  }
  while (const dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0') {
      continue;
    }
    if (const auto stat = StatOf(static_cast<pid_t>(pid)); stat && stat->second == parent) {
      children.push_back(static_cast<pid_t>(pid));
    }
  }
  ::closedir(dir);
  return children;
}

bool AllGone(const std::vector<pid_t>& pids) {
  for (const pid_t pid : pids) {
    if (ProcessAlive(pid)) {
      return false;
    }
  }
  return true;
}

/// Waits until every pid is gone, at most `timeout`.
bool WaitGone(const std::vector<pid_t>& pids, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!AllGone(pids)) {
    if (Clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void SignalAll(const std::vector<pid_t>& pids, int signal) {
  for (const pid_t pid : pids) {
    ::kill(pid, signal);
  }
}

}  // namespace

absl::StatusOr<FaultSpec> ParseFault(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("fault '{}': expected TARGET:kill or TARGET:term", text));
  }
  FaultSpec fault{.name = text, .target = text.substr(0, colon)};
  const std::string how = text.substr(colon + 1);
  if (kTargets.count(fault.target) == 0) {
    return absl::InvalidArgumentError(
        fmt::format("fault '{}': unknown target '{}' (thing-model, device-gateway, shadow, "
                    "command-dispatch, rule-forwarding, mosquitto, redis, postgres)",
                    text, fault.target));
  }
  if (how == "kill") {
    fault.signal = SIGKILL;
  } else if (how == "term") {
    fault.signal = SIGTERM;
  } else {
    return absl::InvalidArgumentError(
        fmt::format("fault '{}': '{}' is neither kill nor term", text, how));
  }
  fault.bounded =
      fault.signal == SIGKILL && (fault.target == "mosquitto" || fault.target == "redis");
  return fault;
}

std::vector<std::string> DefaultFaults() {
  return {"device-gateway:kill", "shadow:kill",   "rule-forwarding:kill", "command-dispatch:kill",
          "thing-model:kill",    "postgres:kill", "redis:term",           "mosquitto:term",
          "redis:kill",          "mosquitto:kill"};
}

bool ProcessAlive(pid_t pid) {
  const auto stat = StatOf(pid);
  return stat && stat->first != 'Z' && stat->first != 'X';
}

std::pair<int, std::string> RunShell(const std::string& command, std::size_t keep) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return {-1, fmt::format("pipe: {}", std::strerror(errno))};
  }
  const pid_t child = ::fork();
  if (child < 0) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return {-1, fmt::format("fork: {}", std::strerror(errno))};
  }
  if (child == 0) {
    // Only async-signal-safe calls between fork and exec (this process has threads).
    const int null_fd = ::open("/dev/null", O_RDONLY);
    ::dup2(null_fd, 0);
    ::dup2(pipe_fds[1], 1);
    ::dup2(pipe_fds[1], 2);
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  std::string output;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    output.append(buffer, static_cast<std::size_t>(n));
    if (output.size() > 4 * keep) {
      output.erase(0, output.size() - keep);
    }
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (output.size() > keep) {
    output.erase(0, output.size() - keep);
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, output};
}

absl::StatusOr<std::map<std::string, double>> ScrapeCounter(const std::string& address,
                                                            const std::string& name,
                                                            const std::string& label) {
  auto url = iot::common::ParseUrl("http://" + address, 80);
  if (!url.ok()) {
    return url.status();
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(url->host.c_str(), std::to_string(url->port).c_str(), &hints, &found) != 0 ||
      found == nullptr) {
    return absl::UnavailableError("cannot resolve " + address);
  }
  const int fd = ::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, 0);
  const bool connected = fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0;
  ::freeaddrinfo(found);
  if (!connected) {
    if (fd >= 0) {
      ::close(fd);
    }
    return absl::UnavailableError(fmt::format("{}: {}", address, std::strerror(errno)));
  }
  const timeval timeout{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  const std::string request = fmt::format("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", address);
  std::string page;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(request.size())) {
    char buffer[8192];
    for (ssize_t n = 0; (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0;) {
      page.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  if (page.rfind("HTTP/1.", 0) != 0 || page.find(" 200 ") == std::string::npos) {
    return absl::UnavailableError(fmt::format("{}/metrics: no 200 answer", address));
  }
  // Sample lines: name{label="value",...} number
  std::map<std::string, double> values;
  const std::string prefix = name + "{";
  const std::string key = label + "=\"";
  std::istringstream lines(page);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0) {
      continue;
    }
    const auto close = line.find('}');
    const auto at = line.find(key);
    if (close == std::string::npos || at == std::string::npos || at > close) {
      continue;
    }
    const auto begin = at + key.size();
    const auto end = line.find('"', begin);
    values[line.substr(begin, end - begin)] += std::atof(line.c_str() + close + 1);
  }
  return values;
}

StackControl::StackControl(std::map<std::string, std::uint16_t> ports, std::string restart_command)
    : ports_(std::move(ports)), restart_command_(std::move(restart_command)) {}

absl::Status StackControl::Check(const std::string& target) const {
  return Processes(target).status();
}

absl::StatusOr<std::vector<pid_t>> StackControl::Processes(const std::string& target) const {
  const auto it = ports_.find(target);
  if (it == ports_.end() || it->second == 0) {
    return absl::FailedPreconditionError(
        fmt::format("{}: its address is not known to the bench{}", target,
                    target == "redis"      ? " (--redis-url, IOT_REDIS_URL)"
                    : target == "postgres" ? " (--pg-url, IOT_PG_URL)"
                                           : ""));
  }
  const auto listener = PidListeningOn(it->second);
  if (!listener) {
    return absl::FailedPreconditionError(
        fmt::format("{}: no process of this user listens on port {}", target, it->second));
  }
  std::vector<pid_t> pids = {*listener};
  if (target == "postgres") {  // the postmaster's backends and auxiliary processes
    for (const pid_t child : ChildrenOf(*listener)) {
      pids.push_back(child);
    }
  }
  return pids;
}

absl::StatusOr<InjectResult> StackControl::Inject(const FaultSpec& fault,
                                                  std::chrono::seconds term_grace) {
  auto pids = Processes(fault.target);
  if (!pids.ok()) {
    return pids.status();
  }
  InjectResult result;
  result.pids = *pids;
  const auto signalled = Clock::now();
  result.signalled_unix_ms = UnixMillis();
  // SIGTERM goes to the main process only (PostgreSQL's postmaster stops its backends itself);
  // SIGKILL to every one of them, as when a container dies.
  if (fault.signal == SIGKILL) {
    SignalAll(*pids, SIGKILL);
  } else {
    ::kill(pids->front(), fault.signal);
  }
  const auto grace = fault.signal == SIGKILL ? std::chrono::seconds(10) : term_grace;
  if (!WaitGone(*pids, grace)) {
    result.escalated = true;
    SignalAll(*pids, SIGKILL);
    if (!WaitGone(*pids, std::chrono::seconds(10))) {
      return absl::InternalError(
          fmt::format("{}: its processes are still there 10 s after SIGKILL", fault.target));
    }
  }
  const auto gone = Clock::now();
  result.gone_s = SecondsBetween(signalled, gone);
  auto [code, output] = RunShell(restart_command_);
  result.restart_s = SecondsBetween(gone, Clock::now());
  result.restart_exit = code;
  if (code != 0) {
    result.restart_output = std::move(output);
  }
  return result;
}

}  // namespace iotbench
