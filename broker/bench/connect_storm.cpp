#include "connect_storm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <stdexcept>
#include <unordered_map>

namespace iot::broker_bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kDisconnect[] = {static_cast<char>(0xE0), 0};
constexpr size_t kConnackSize = 4;

void AppendField(std::string& out, const std::string& field) {
  out.push_back(static_cast<char>((field.size() >> 8) & 0xFF));
  out.push_back(static_cast<char>(field.size() & 0xFF));
  out.append(field);
}

enum class Phase { kConnecting, kAwaitingConnack, kDone };

struct Connection {
  int fd = -1;
  Phase phase = Phase::kConnecting;
  Clock::time_point started;
  std::string sent;  ///< Bytes of the CONNECT still to write.
  std::string received;
};

class Storm {
 public:
  Storm(uint16_t port, const std::vector<StormClient>& clients)
      : clients_(clients), connections_(clients.size()), epoll_(epoll_create1(0)) {
    if (epoll_ < 0) {
      throw std::runtime_error("epoll_create1 failed");
    }
    address_.sin_family = AF_INET;
    address_.sin_port = htons(port);
    address_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }

  ~Storm() {
    for (auto& connection : connections_) {
      if (connection.fd >= 0) {
        if (connection.phase == Phase::kDone) {
          (void)!write(connection.fd, kDisconnect, sizeof(kDisconnect));
        }
        close(connection.fd);
      }
    }
    close(epoll_);
  }
  Storm(const Storm&) = delete;
  Storm& operator=(const Storm&) = delete;

  StormResult Run(int window, std::chrono::milliseconds timeout) {
    const auto start = Clock::now();
    const auto deadline = start + timeout;
    size_t next = 0;
    size_t finished = 0;
    std::array<epoll_event, 256> events{};
    while (finished < clients_.size() && Clock::now() < deadline) {
      while (in_flight_ < window && next < clients_.size()) {
        if (!Start(next++)) {
          ++finished;
        }
      }
      const int ready = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 100);
      for (int i = 0; i < ready; ++i) {
        if (Handle(events[static_cast<size_t>(i)].data.u32,
                   events[static_cast<size_t>(i)].events)) {
          ++finished;
        }
      }
    }
    const double seconds = std::chrono::duration<double>(last_connack_ - start).count();
    StormResult result;
    result.accepted = accepted_;
    result.refused = static_cast<int>(clients_.size()) - accepted_;
    result.per_second = seconds > 0 ? accepted_ / seconds : 0;
    if (!latencies_.empty()) {
      std::sort(latencies_.begin(), latencies_.end());
      result.p50 = latencies_[latencies_.size() / 2];
      result.p99 = latencies_[std::min(latencies_.size() - 1, latencies_.size() * 99 / 100)];
    }
    result.latencies = latencies_;
    return result;
  }

 private:
  /// False when the connect failed at once.
  bool Start(size_t index) {
    Connection& connection = connections_[index];
    connection.started = Clock::now();
    connection.sent = ConnectPacket(clients_[index]);
    connection.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (connection.fd < 0) {
      return false;
    }
    const int one = 1;
    setsockopt(connection.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(connection.fd, reinterpret_cast<const sockaddr*>(&address_), sizeof(address_)) !=
            0 &&
        errno != EINPROGRESS) {
      Fail(connection);
      return false;
    }
    epoll_event event{};
    event.events = EPOLLOUT;
    event.data.u32 = static_cast<uint32_t>(index);
    epoll_ctl(epoll_, EPOLL_CTL_ADD, connection.fd, &event);
    ++in_flight_;
    return true;
  }

  void Fail(Connection& connection) {
    close(connection.fd);
    connection.fd = -1;
    connection.phase = Phase::kDone;
  }

  /// True when the connection finished (accepted or refused).
  bool Handle(uint32_t index, uint32_t events) {
    Connection& connection = connections_[index];
    if (connection.phase == Phase::kConnecting && (events & EPOLLOUT) != 0 &&
        (events & EPOLLERR) == 0) {
      const ssize_t n = write(connection.fd, connection.sent.data(), connection.sent.size());
      if (n < 0 && errno != EAGAIN) {
        return Finish(connection, false);
      }
      connection.sent.erase(0, n < 0 ? 0 : static_cast<size_t>(n));
      if (connection.sent.empty()) {
        connection.phase = Phase::kAwaitingConnack;
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u32 = index;
        epoll_ctl(epoll_, EPOLL_CTL_MOD, connection.fd, &event);
      }
      return false;
    }
    if (connection.phase == Phase::kAwaitingConnack && (events & EPOLLIN) != 0) {
      std::array<char, 64> buffer{};
      const ssize_t n = read(connection.fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EAGAIN) {
        return false;
      }
      if (n <= 0) {
        return Finish(connection, false);
      }
      connection.received.append(buffer.data(), static_cast<size_t>(n));
      if (connection.received.size() < kConnackSize) {
        return false;
      }
      return Finish(connection, connection.received[0] == 0x20 && connection.received[3] == 0);
    }
    return Finish(connection, false);
  }

  bool Finish(Connection& connection, bool accepted) {
    --in_flight_;
    epoll_ctl(epoll_, EPOLL_CTL_DEL, connection.fd, nullptr);
    if (!accepted) {
      Fail(connection);
      return true;
    }
    connection.phase = Phase::kDone;
    ++accepted_;
    last_connack_ = Clock::now();
    latencies_.push_back(
        std::chrono::duration_cast<std::chrono::microseconds>(last_connack_ - connection.started));
    return true;
  }

  const std::vector<StormClient>& clients_;
  std::vector<Connection> connections_;
  const int epoll_;
  sockaddr_in address_{};
  int in_flight_ = 0;
  int accepted_ = 0;
  Clock::time_point last_connack_;
  std::vector<std::chrono::microseconds> latencies_;
};

}  // namespace

std::string ConnectPacket(const StormClient& client) {
  std::string body;
  AppendField(body, "MQTT");
  body.push_back(4);     // protocol level 3.1.1
  uint8_t flags = 0x02;  // clean session
  if (client.username) {
    flags |= 0x80;
  }
  if (client.password) {
    flags |= 0x40;
  }
  body.push_back(static_cast<char>(flags));
  body.push_back(0);
  body.push_back(60);  // keep-alive
  AppendField(body, client.client_id);
  if (client.username) {
    AppendField(body, *client.username);
  }
  if (client.password) {
    AppendField(body, *client.password);
  }
  std::string packet(1, static_cast<char>(0x10));
  size_t length = body.size();
  do {
    uint8_t byte = length % 128;
    length /= 128;
    if (length > 0) {
      byte |= 0x80;
    }
    packet.push_back(static_cast<char>(byte));
  } while (length > 0);
  return packet + body;
}

namespace {

/// The current UTC hour, YYYYMMDDHH.
std::string UtcHour() {
  const auto hour = std::chrono::floor<std::chrono::hours>(std::chrono::system_clock::now());
  const auto day = std::chrono::floor<std::chrono::days>(hour);
  const std::chrono::year_month_day date{day};
  std::array<char, 32> ts{};
  std::snprintf(ts.data(), ts.size(), "%04d%02u%02u%02ld", static_cast<int>(date.year()),
                static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                static_cast<long>((hour - day).count()));
  return ts.data();
}

/// A non-blocking socket from `source` connecting to `target`, or -1.
int StartConnect(const sockaddr_in& source, const sockaddr_in& target) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // Close without TIME_WAIT: tens of thousands of connects a minute from one address
  // would otherwise run out of local ports.
  const linger no_linger{.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_linger, sizeof(no_linger));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&source), sizeof(source)) != 0 ||
      (connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof(target)) != 0 &&
       errno != EINPROGRESS)) {
    close(fd);
    return -1;
  }
  return fd;
}

/// The flood's connections in flight: CONNECT written, then the first answer read.
class FloodConnections {
 public:
  FloodConnections(int epoll, FloodResult& result) : epoll_(epoll), result_(result) {}
  FloodConnections(const FloodConnections&) = delete;
  FloodConnections& operator=(const FloodConnections&) = delete;
  ~FloodConnections() {
    for (const auto& [fd, unused] : unsent_) {
      close(fd);
    }
  }

  [[nodiscard]] size_t size() const { return unsent_.size(); }

  void Add(int fd, std::string connect) {
    unsent_[fd] = std::move(connect);
    epoll_event event{};
    event.events = EPOLLOUT;
    event.data.fd = fd;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event);
    ++result_.started;
  }

  void OnEvent(const epoll_event& event) {
    const int fd = event.data.fd;
    auto it = unsent_.find(fd);
    if (it == unsent_.end()) {
      return;
    }
    if ((event.events & (EPOLLERR | EPOLLHUP)) != 0) {
      Close(fd);
    } else if ((event.events & EPOLLOUT) != 0 && !it->second.empty()) {
      const ssize_t n = write(fd, it->second.data(), it->second.size());
      if (n < 0 && errno != EAGAIN) {
        Close(fd);
        return;
      }
      it->second.erase(0, n < 0 ? 0 : static_cast<size_t>(n));
      if (it->second.empty()) {
        epoll_event in{};
        in.events = EPOLLIN;
        in.data.fd = fd;
        epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &in);
      }
    } else if ((event.events & EPOLLIN) != 0) {
      std::array<char, 64> buffer{};
      const ssize_t n = read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EAGAIN) {
        return;
      }
      if (n >= static_cast<ssize_t>(kConnackSize) && buffer[0] == 0x20 && buffer[3] == 0) {
        ++result_.accepted;
      }
      Close(fd);
    }
  }

 private:
  void Close(int fd) {
    epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    unsent_.erase(fd);
    ++result_.finished;
  }

  const int epoll_;
  FloodResult& result_;
  std::unordered_map<int, std::string> unsent_;  ///< By socket: what is left of its CONNECT.
};

}  // namespace

FloodResult Flood(uint16_t port, const std::string& source_address, const std::string& prefix,
                  double per_second, int window, const std::function<bool()>& stop) {
  const int epoll = epoll_create1(0);
  if (epoll < 0) {
    throw std::runtime_error("epoll_create1 failed");
  }
  sockaddr_in target{};
  target.sin_family = AF_INET;
  target.sin_port = htons(port);
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sockaddr_in source{};
  source.sin_family = AF_INET;
  if (inet_pton(AF_INET, source_address.c_str(), &source.sin_addr) != 1) {
    throw std::runtime_error("bad source address " + source_address);
  }
  // The client ids are well formed (`{device}_0_0_{UTC hour}`), only the devices unknown.
  const std::string suffix = "_0_0_" + UtcHour();
  FloodResult result;
  const auto start = Clock::now();
  {
    FloodConnections connections(epoll, result);
    std::array<epoll_event, 256> events{};
    while (!stop()) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      while (static_cast<double>(result.started) < per_second * elapsed &&
             static_cast<int>(connections.size()) < window) {
        const int fd = StartConnect(source, target);
        if (fd < 0) {
          break;
        }
        // A device id in the platform's format (product_node) that no registry holds.
        const std::string id = prefix + std::to_string(result.started);
        connections.Add(
            fd, ConnectPacket(
                    {.client_id = id + suffix, .username = id, .password = std::string(64, '0')}));
      }
      const int ready = epoll_wait(epoll, events.data(), static_cast<int>(events.size()), 1);
      for (int i = 0; i < ready; ++i) {
        connections.OnEvent(events[static_cast<size_t>(i)]);
      }
    }
  }
  close(epoll);
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

StormResult ConnectStorm(uint16_t port, const std::vector<StormClient>& clients, int window,
                         std::chrono::milliseconds timeout,
                         const std::function<void(const StormResult&)>& hold) {
  Storm storm(port, clients);
  StormResult result = storm.Run(window, timeout);
  if (hold) {
    hold(result);
  }
  return result;
}

}  // namespace iot::broker_bench
