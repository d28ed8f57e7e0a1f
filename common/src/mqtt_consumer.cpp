#include "iot/common/mqtt_consumer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "iot/common/backoff.h"
#include "iot/common/url.h"

namespace iot::common {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint16_t kSubscribePacketId = 1;
constexpr auto kDisconnectGrace = std::chrono::seconds(2);
/// Bytes read from the socket per poll round, so that acknowledgements keep flowing.
constexpr size_t kReadBudget = 256 * 1024;

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  if (code == 0) {
    return std::strerror(errno);
  }
  std::array<char, 256> text{};
  ERR_error_string_n(code, text.data(), text.size());
  ERR_clear_error();
  return text.data();
}

// A new SSL on `fd` that verifies the broker's host name or address.
SSL* NewTls(SSL_CTX* ctx, int fd, const std::string& host) {
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  std::array<unsigned char, sizeof(in6_addr)> ip{};
  if (::inet_pton(AF_INET, host.c_str(), ip.data()) == 1 ||
      ::inet_pton(AF_INET6, host.c_str(), ip.data()) == 1) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
  } else {
    // SSL_set_tlsext_host_name(), without the macro's C cast.
    SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(host.c_str()));
    SSL_set1_host(ssl, host.c_str());
  }
  return ssl;
}

int MillisUntil(Clock::time_point when) {
  const auto left = std::chrono::duration_cast<milliseconds>(when - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1000));
}

std::string_view ReasonName(uint8_t reason) {
  switch (reason) {
    case 0x00:
      return "normal disconnection";
    case 0x80:
      return "unspecified error";
    case 0x81:
      return "malformed packet";
    case 0x82:
      return "protocol error";
    case 0x84:
      return "unsupported protocol version";
    case 0x85:
      return "client identifier not valid";
    case 0x86:
      return "bad user name or password";
    case 0x87:
      return "not authorized";
    case 0x88:
      return "server unavailable";
    case 0x89:
      return "server busy";
    case 0x8B:
      return "server shutting down";
    case 0x8D:
      return "keep alive timeout";
    case 0x8E:
      return "session taken over";
    case 0x93:
      return "receive maximum exceeded";
    case 0x95:
      return "packet too large";
    case 0x97:
      return "quota exceeded";
    default:
      return "error";
  }
}

}  // namespace

const std::string* MqttDelivery::UserProperty(std::string_view name) const {
  for (const auto& [key, value] : user_properties) {
    if (key == name) {
      return &value;
    }
  }
  return nullptr;
}

// ---- AckWindow ----

void AckWindow::NewConnection() {
  size_t unacknowledged = 0;
  for (const uint16_t packet_id : order_) {
    unacknowledged += state_[packet_id] == kDelivered ? 1U : 0U;
    state_[packet_id] = kFree;
  }
  order_.clear();
  if (unacknowledged > 0) {
    stale_[generation_] = unacknowledged;
    stale_total_ += unacknowledged;
  }
  ++generation_;
  if (generation_ > 0xFFFF'FFFF'FFFFull) {  // tokens have 48 bits of generation
    generation_ = 1;
  }
}

std::optional<uint64_t> AckWindow::Deliver(uint16_t packet_id) {
  if (state_[packet_id] != kFree) {
    return std::nullopt;
  }
  state_[packet_id] = kDelivered;
  order_.push_back(packet_id);
  return (generation_ << 16) | packet_id;
}

bool AckWindow::Ack(uint64_t token) {
  const uint64_t generation = token >> 16;
  const auto packet_id = static_cast<uint16_t>(token & 0xFFFF);
  if (generation == generation_) {
    if (state_[packet_id] != kDelivered) {
      return false;
    }
    state_[packet_id] = kAcked;
    return !order_.empty() && order_.front() == packet_id;
  }
  const auto it = stale_.find(generation);
  if (it != stale_.end()) {
    --stale_total_;
    if (--it->second == 0) {
      stale_.erase(it);
    }
  }
  return false;
}

void AckWindow::TakeReady(std::vector<uint16_t>& out) {
  while (!order_.empty() && state_[order_.front()] == kAcked) {
    state_[order_.front()] = kFree;
    out.push_back(order_.front());
    order_.pop_front();
  }
}

// ---- Connection: a socket, maybe TLS, and what waits to be written ----

class MqttConsumer::Connection {
 public:
  Connection(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  ~Connection() {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
    }
    ::close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] SSL* ssl() const { return ssl_; }
  [[nodiscard]] bool pending() const { return out_pos_ < out_.size(); }
  [[nodiscard]] bool wants_write() const { return pending() || read_wants_write_; }
  /// TLS records already decrypted and not read yet (poll(2) does not see them).
  [[nodiscard]] bool buffered() const { return ssl_ != nullptr && SSL_pending(ssl_) > 0; }

  void Queue(std::string_view bytes) {
    if (out_pos_ == out_.size()) {
      out_.clear();
      out_pos_ = 0;
    }
    out_.append(bytes);
  }

  /// Writes as much as the socket takes. An error ends the connection.
  absl::Status Flush() {
    while (pending()) {
      const size_t n = out_.size() - out_pos_;
      if (ssl_ != nullptr) {
        const int written = SSL_write(ssl_, out_.data() + out_pos_, static_cast<int>(n));
        if (written <= 0) {
          const int error = SSL_get_error(ssl_, written);
          if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) {
            return absl::OkStatus();
          }
          return absl::UnavailableError(absl::StrCat("TLS write: ", OpenSslError()));
        }
        out_pos_ += static_cast<size_t>(written);
      } else {
        const ssize_t written = ::send(fd_, out_.data() + out_pos_, n, MSG_NOSIGNAL);
        if (written < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return absl::OkStatus();
          }
          return absl::UnavailableError(absl::StrCat("write: ", std::strerror(errno)));
        }
        out_pos_ += static_cast<size_t>(written);
      }
    }
    return absl::OkStatus();
  }

  /// Closes gracefully: TLS close_notify, FIN, then reads and drops what the broker still sends
  /// until it closes too (or `deadline`). Closing with unread data in the receive buffer would
  /// send a RST instead, and a broker that gets a RST drops what it had not read yet — the
  /// last PUBACKs, which it would then deliver again to the session's next connection.
  void Close(Clock::time_point deadline) {
    if (ssl_ != nullptr) {
      (void)SSL_shutdown(ssl_);
    }
    ::shutdown(fd_, SHUT_WR);
    std::array<char, 16 * 1024> buffer{};
    while (Clock::now() < deadline) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, MillisUntil(deadline)) <= 0) {
        continue;
      }
      const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        return;
      }
    }
  }

  /// Reads what is there (up to kReadBudget) into `reader`. `closed`: the peer closed.
  absl::Status Read(mqtt::PacketReader& reader, bool& closed) {
    std::array<char, 16 * 1024> buffer{};
    size_t total = 0;
    read_wants_write_ = false;
    while (total < kReadBudget) {
      if (ssl_ != nullptr) {
        const int n = SSL_read(ssl_, buffer.data(), static_cast<int>(buffer.size()));
        if (n <= 0) {
          const int error = SSL_get_error(ssl_, n);
          if (error == SSL_ERROR_WANT_READ) {
            return absl::OkStatus();
          }
          if (error == SSL_ERROR_WANT_WRITE) {
            read_wants_write_ = true;
            return absl::OkStatus();
          }
          if (error == SSL_ERROR_ZERO_RETURN) {
            closed = true;
            return absl::OkStatus();
          }
          return absl::UnavailableError(absl::StrCat("TLS read: ", OpenSslError()));
        }
        reader.Append(std::string_view(buffer.data(), static_cast<size_t>(n)));
        total += static_cast<size_t>(n);
      } else {
        const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
        if (n == 0) {
          closed = true;
          return absl::OkStatus();
        }
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return absl::OkStatus();
          }
          return absl::UnavailableError(absl::StrCat("read: ", std::strerror(errno)));
        }
        reader.Append(std::string_view(buffer.data(), static_cast<size_t>(n)));
        total += static_cast<size_t>(n);
      }
    }
    return absl::OkStatus();
  }

 private:
  const int fd_;
  SSL* const ssl_;
  std::string out_;
  size_t out_pos_ = 0;
  bool read_wants_write_ = false;
};

// ---- MqttConsumer ----

absl::StatusOr<std::shared_ptr<MqttConsumer>> MqttConsumer::Create(MqttConsumerOptions options) {
  auto url = ParseUrl(options.url);
  if (!url.ok()) {
    return url.status();
  }
  if (url->scheme != "mqtt" && url->scheme != "mqtts") {
    return absl::InvalidArgumentError(
        absl::StrCat("MQTT URL '", MaskUrl(options.url), "' must start with mqtt:// or mqtts://"));
  }
  if (options.client_id.empty()) {
    return absl::InvalidArgumentError("an MQTT consumer needs a client id");
  }
  if (options.keepalive_seconds == 0) {
    return absl::InvalidArgumentError("MQTT keepalive_seconds must be at least 1");
  }
  if (options.receive_maximum == 0) {
    return absl::InvalidArgumentError("MQTT receive_maximum must be in [1, 65535]");
  }
  const bool tls = url->scheme == "mqtts";
  const uint16_t port = url->port != 0 ? url->port : (tls ? 8883 : 1883);
  if (options.username.empty()) {
    options.username = url->user;
  }
  if (options.password.empty()) {
    options.password = url->password;
  }
  std::shared_ptr<MqttConsumer> consumer(
      new MqttConsumer(std::move(options), url->host, port, tls));
  if (tls) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) {
      return absl::InternalError(absl::StrCat("TLS context: ", OpenSslError()));
    }
    consumer->ssl_ctx_ = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    const std::string& ca = consumer->options_.tls_ca_file;
    const int loaded = ca.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                                  : SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr);
    if (loaded != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("MQTT TLS CA file '", ca, "': ", OpenSslError()));
    }
  }
  consumer->wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (consumer->wake_fd_ < 0) {
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  return consumer;
}

MqttConsumer::MqttConsumer(MqttConsumerOptions options, std::string host, uint16_t port, bool tls)
    : options_(std::move(options)),
      host_(std::move(host)),
      port_(port),
      tls_(tls),
      masked_url_(MaskUrl(options_.url)) {}

MqttConsumer::~MqttConsumer() {
  Stop();
  if (ssl_ctx_ != nullptr) {
    SSL_CTX_free(static_cast<SSL_CTX*>(ssl_ctx_));
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
  }
}

void MqttConsumer::SetHandler(Handler handler) { handler_ = std::move(handler); }

absl::Status MqttConsumer::Start() {
  std::lock_guard lock(mu_);
  if (started_) {
    return absl::FailedPreconditionError("MqttConsumer::Start called twice");
  }
  started_ = true;
  thread_ = std::thread(&MqttConsumer::Run, this);
  return absl::OkStatus();
}

void MqttConsumer::Stop() {
  std::thread thread;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    thread = std::move(thread_);
  }
  changed_.notify_all();
  Wake();
  if (thread.joinable()) {
    thread.join();
  }
}

void MqttConsumer::Wake() {
  const uint64_t one = 1;
  // A full counter (never in practice) already means "wake up".
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof(one));
}

void MqttConsumer::DrainWake() {
  uint64_t count = 0;
  [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &count, sizeof(count));
}

void MqttConsumer::Ack(uint64_t token) {
  if (token == 0) {
    return;
  }
  bool wake = false;
  bool notify = false;
  {
    std::lock_guard lock(mu_);
    const size_t stale = window_.stale();
    wake = window_.Ack(token) && connected_;
    notify = stale > 0 && window_.stale() == 0;
  }
  if (wake) {
    Wake();
  }
  if (notify) {
    changed_.notify_all();
  }
}

void MqttConsumer::Pause() {
  {
    std::lock_guard lock(mu_);
    paused_ = true;
  }
  changed_.notify_all();
}

bool MqttConsumer::DrainedLocked() const {
  return paused_ && window_.in_flight() == 0 && window_.stale() == 0 && flushed_;
}

bool MqttConsumer::Drained() const {
  std::lock_guard lock(mu_);
  return DrainedLocked();
}

bool MqttConsumer::WaitDrained(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [this] { return DrainedLocked(); });
}

bool MqttConsumer::connected() const {
  std::lock_guard lock(mu_);
  return connected_;
}

bool MqttConsumer::subscribed() const {
  std::lock_guard lock(mu_);
  return subscribed_;
}

bool MqttConsumer::WaitSubscribed(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [this] { return subscribed_; });
}

size_t MqttConsumer::unacknowledged() const {
  std::lock_guard lock(mu_);
  return window_.in_flight() + window_.stale();
}

void MqttConsumer::WaitStopping(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  changed_.wait_for(lock, timeout, [this] { return stopping_; });
}

void MqttConsumer::Run() {
  // A write to a closed TLS socket must fail with EPIPE, not kill the process.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);

  Backoff backoff(options_.reconnect_initial, options_.reconnect_max);
  bool ever_accepted = false;
  uint32_t failures = 0;
  while (true) {
    {
      // Deliveries of a lost connection are finished first (see the header), and a paused
      // consumer is being handed over: it does not come back.
      std::unique_lock lock(mu_);
      changed_.wait(lock, [this] { return stopping_ || (!paused_ && window_.stale() == 0); });
      if (stopping_) {
        return;
      }
    }
    const bool accepted = Session(!ever_accepted);
    if (accepted) {
      ever_accepted = true;
      failures = 0;
      backoff.Reset();
    } else if (++failures == 1) {
      spdlog::warn("mqtt {}: '{}' cannot connect; retrying with backoff", masked_url_,
                   options_.client_id);
    }
    WaitStopping(backoff.Next());
  }
}

/// What one connection knows about itself.
struct MqttConsumer::SessionState {
  bool first = true;  ///< No connection was accepted before.
  bool accepted = false;
  Clock::time_point deadline;  ///< Of the CONNACK.
  std::chrono::seconds keepalive{30};
  Clock::time_point next_ping = Clock::time_point::max();
  std::optional<Clock::time_point> ping_deadline;
};

bool MqttConsumer::AwaitFd(int fd, short events, Clock::time_point deadline) {
  while (Clock::now() < deadline) {
    std::array<pollfd, 2> fds{pollfd{fd, events, 0}, pollfd{wake_fd_, POLLIN, 0}};
    if (::poll(fds.data(), fds.size(), MillisUntil(deadline)) < 0 && errno != EINTR) {
      return false;
    }
    if (fds[1].revents != 0) {
      DrainWake();
      std::lock_guard lock(mu_);
      if (stopping_) {
        return false;
      }
    }
    if (fds[0].revents != 0) {
      return true;
    }
  }
  return false;
}

int MqttConsumer::ConnectTcp(SessionState& state) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  const std::string port = std::to_string(port_);
  if (const int rc = ::getaddrinfo(host_.c_str(), port.c_str(), &hints, &addresses); rc != 0) {
    spdlog::debug("mqtt {}: resolve '{}': {}", masked_url_, host_, gai_strerror(rc));
    return -1;
  }
  state.deadline = Clock::now() + options_.connect_timeout;
  int fd = -1;
  for (addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int error = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (error == EINPROGRESS) {
      error = ETIMEDOUT;
      if (AwaitFd(fd, POLLOUT, state.deadline)) {
        socklen_t length = sizeof(error);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
      }
    }
    if (error != 0) {
      spdlog::debug("mqtt {}: connect: {}", masked_url_, std::strerror(error));
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(addresses);
  return fd;
}

bool MqttConsumer::TlsHandshake(Connection& connection, Clock::time_point deadline) {
  SSL* ssl = connection.ssl();
  while (true) {
    const int rc = SSL_connect(ssl);
    if (rc == 1) {
      return true;
    }
    const int error = SSL_get_error(ssl, rc);
    if ((error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) ||
        !AwaitFd(connection.fd(), error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
      spdlog::warn("mqtt {}: TLS handshake failed: {}", masked_url_,
                   error == SSL_ERROR_SSL ? OpenSslError() : "timeout or connection closed");
      return false;
    }
  }
}

bool MqttConsumer::Session(bool first) {
  SessionState state;
  state.first = first;
  state.keepalive = std::chrono::seconds(options_.keepalive_seconds);
  const int fd = ConnectTcp(state);
  if (fd < 0) {
    return false;
  }
  Connection connection(fd, tls_ ? NewTls(static_cast<SSL_CTX*>(ssl_ctx_), fd, host_) : nullptr);
  if (connection.ssl() != nullptr && !TlsHandshake(connection, state.deadline)) {
    return false;
  }
  connection.Queue(mqtt::EncodeConnect({.client_id = options_.client_id,
                                        .username = options_.username,
                                        .password = options_.password,
                                        .clean_start = false,
                                        .keepalive_seconds = options_.keepalive_seconds,
                                        .session_expiry_seconds = options_.session_expiry_seconds,
                                        .receive_maximum = options_.receive_maximum}));
  const bool accepted = Converse(connection, state);
  // Whatever ends the connection: the deliveries it had become stale (AckWindow).
  {
    std::lock_guard lock(mu_);
    connected_ = false;
    subscribed_ = false;
    flushed_ = true;
    window_.NewConnection();
  }
  changed_.notify_all();
  return accepted;
}

bool MqttConsumer::Converse(Connection& connection, SessionState& state) {
  mqtt::PacketReader reader;
  std::vector<uint16_t> ready;
  while (true) {
    if (QueueAcks(connection, state, ready)) {
      Disconnect(connection, state.accepted);
      return state.accepted;
    }
    // What was read and not handled yet, up to a QoS 1 PUBLISH the window has no room for.
    bool held = false;
    if (!HandleReceived(connection, reader, state, held)) {
      return state.accepted;
    }
    if (const std::optional<bool> ended = CheckTimers(connection, state, held)) {
      return *ended;
    }
    if (absl::Status st = connection.Flush(); !st.ok()) {
      spdlog::warn("mqtt {}: '{}' connection lost: {}", masked_url_, options_.client_id,
                   std::string(st.message()));
      return state.accepted;
    }
    NoteFlushed(connection);
    if (!PollAndRead(connection, reader, state, held)) {
      return state.accepted;
    }
  }
}

bool MqttConsumer::QueueAcks(Connection& connection, const SessionState& state,
                             std::vector<uint16_t>& ready) {
  bool stop = false;
  {
    std::lock_guard lock(mu_);
    stop = stopping_;
    if (state.accepted) {
      window_.TakeReady(ready);
    }
  }
  for (const uint16_t packet_id : ready) {
    connection.Queue(mqtt::EncodePuback(packet_id));
  }
  ready.clear();
  return stop;
}

void MqttConsumer::Disconnect(Connection& connection, bool accepted) {
  if (accepted) {
    connection.Queue(mqtt::EncodeDisconnect(0));
  }
  const auto grace = Clock::now() + kDisconnectGrace;
  while (connection.Flush().ok() && connection.pending() && Clock::now() < grace) {
    pollfd pfd{connection.fd(), POLLOUT, 0};
    ::poll(&pfd, 1, MillisUntil(grace));
  }
  connection.Close(grace);
}

bool MqttConsumer::HandleReceived(Connection& connection, mqtt::PacketReader& reader,
                                  SessionState& state, bool& held) {
  while (true) {
    auto packet = reader.Peek();
    if (!packet.ok()) {
      spdlog::error("mqtt {}: '{}': {}", masked_url_, options_.client_id,
                    std::string(packet.status().message()));
      return false;
    }
    if (!*packet) {
      return true;
    }
    if ((*packet)->type == mqtt::PacketType::kPublish && ((*packet)->flags & 0x06) != 0) {
      std::lock_guard lock(mu_);
      held = window_.in_flight() >= options_.receive_maximum;
    }
    if (held) {
      return true;
    }
    reader.Skip();
    if (!OnPacket(connection, **packet, state)) {
      return false;
    }
  }
}

std::optional<bool> MqttConsumer::CheckTimers(Connection& connection, SessionState& state,
                                              bool held) {
  const auto now = Clock::now();
  if (!state.accepted && now >= state.deadline) {
    spdlog::warn("mqtt {}: no CONNACK within {} ms", masked_url_, options_.connect_timeout.count());
    return false;
  }
  if (held) {
    // Not reading, the PINGRESPs wait behind the held PUBLISH: liveness is not checked.
    state.ping_deadline.reset();
  } else if (state.ping_deadline && now >= *state.ping_deadline) {
    spdlog::warn("mqtt {}: '{}': no PINGRESP within the keepalive ({} s): reconnecting",
                 masked_url_, options_.client_id, state.keepalive.count());
    return true;
  }
  if (state.accepted && now >= state.next_ping) {
    connection.Queue(mqtt::EncodePingreq());
    state.next_ping = now + state.keepalive / 2;
    if (!state.ping_deadline && !held) {
      state.ping_deadline = now + state.keepalive;
    }
  }
  return std::nullopt;
}

void MqttConsumer::NoteFlushed(const Connection& connection) {
  bool drained_now = false;
  {
    std::lock_guard lock(mu_);
    const bool flushed = !connection.pending() && window_.in_flight() == 0;
    drained_now = flushed && !flushed_;
    flushed_ = flushed;
  }
  if (drained_now) {
    changed_.notify_all();
  }
}

bool MqttConsumer::PollAndRead(Connection& connection, mqtt::PacketReader& reader,
                               const SessionState& state, bool held) {
  // A held PUBLISH stops reading: TCP holds the broker back where mosquitto 2.0.11 itself
  // would not (see the header); an acknowledgement wakes this thread up.
  const auto wake_at =
      state.accepted
          ? std::min(state.next_ping, state.ping_deadline.value_or(Clock::time_point::max()))
          : state.deadline;
  const short read = held ? 0 : POLLIN;
  std::array<pollfd, 2> fds{
      pollfd{connection.fd(), static_cast<short>(read | (connection.wants_write() ? POLLOUT : 0)),
             0},
      pollfd{wake_fd_, POLLIN, 0}};
  const bool buffered = !held && connection.buffered();
  if (::poll(fds.data(), fds.size(), buffered ? 0 : MillisUntil(wake_at)) < 0 && errno != EINTR) {
    spdlog::error("mqtt {}: poll: {}", masked_url_, std::strerror(errno));
    return false;
  }
  if ((fds[1].revents & POLLIN) != 0) {
    DrainWake();
  }
  if (held && (fds[0].revents & (POLLERR | POLLHUP)) != 0) {
    spdlog::warn("mqtt {}: '{}' connection lost", masked_url_, options_.client_id);
    return false;
  }
  if (held || (!buffered && (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) == 0)) {
    return true;
  }
  bool closed = false;
  if (absl::Status st = connection.Read(reader, closed); !st.ok() || closed) {
    if (state.accepted) {
      spdlog::warn("mqtt {}: '{}' connection lost: {}", masked_url_, options_.client_id,
                   st.ok() ? std::string("closed by the broker") : std::string(st.message()));
    }
    return false;
  }
  return true;
}

bool MqttConsumer::OnPacket(Connection& connection, const mqtt::Packet& packet,
                            SessionState& state) {
  switch (packet.type) {
    case mqtt::PacketType::kConnack:
      return OnConnack(connection, packet, state);
    case mqtt::PacketType::kPublish:
      return OnPublish(packet);
    case mqtt::PacketType::kSuback:
      return OnSuback(packet);
    case mqtt::PacketType::kPingresp:
      state.ping_deadline.reset();
      return true;
    case mqtt::PacketType::kDisconnect: {
      const auto disconnect = mqtt::DecodeDisconnect(packet.body);
      const uint8_t reason = disconnect.ok() ? disconnect->reason : 0x81;
      spdlog::warn("mqtt {}: broker disconnected '{}': {} (0x{:02x}) {}", masked_url_,
                   options_.client_id, ReasonName(reason), reason,
                   disconnect.ok() ? disconnect->reason_string : "");
      return false;
    }
    default:
      return true;  // nothing else is expected by a subscriber
  }
}

bool MqttConsumer::OnConnack(Connection& connection, const mqtt::Packet& packet,
                             SessionState& state) {
  auto connack = mqtt::DecodeConnack(packet.body);
  if (!connack.ok()) {
    spdlog::error("mqtt {}: {}", masked_url_, std::string(connack.status().message()));
    return false;
  }
  if (connack->reason >= 0x80) {
    spdlog::warn("mqtt {}: broker refused '{}': {} (0x{:02x}) {}", masked_url_, options_.client_id,
                 ReasonName(connack->reason), connack->reason, connack->reason_string);
    return false;
  }
  state.accepted = true;
  if (connack->server_keepalive && *connack->server_keepalive > 0) {
    state.keepalive = std::chrono::seconds(*connack->server_keepalive);
  }
  state.next_ping = Clock::now() + state.keepalive / 2;
  if (!state.first && !connack->session_present) {
    spdlog::warn(
        "mqtt {}: '{}': the broker did not resume the session (expired or lost): what it "
        "had queued for it is gone",
        masked_url_, options_.client_id);
  }
  if (!state.first) {
    ++reconnects_;
  }
  {
    std::lock_guard lock(mu_);
    connected_ = true;
    subscribed_ = false;
  }
  changed_.notify_all();
  spdlog::info("mqtt {}: connected as '{}' (receive maximum {}){}", masked_url_, options_.client_id,
               options_.receive_maximum,
               state.first ? "" : absl::StrCat(" (reconnect ", reconnects_.load(), ")"));
  connection.Queue(mqtt::EncodeSubscribe(
      {.packet_id = kSubscribePacketId, .subscriptions = options_.subscriptions}));
  return true;
}

bool MqttConsumer::OnPublish(const mqtt::Packet& packet) {
  auto publish = mqtt::DecodePublish(packet.flags, packet.body);
  if (!publish.ok()) {
    spdlog::error("mqtt {}: {}", masked_url_, std::string(publish.status().message()));
    return false;
  }
  if (publish->qos == 2) {
    // Every subscription asks for QoS 1 at most, so the broker never sends QoS 2.
    spdlog::error("mqtt {}: QoS 2 PUBLISH on '{}' not supported", masked_url_, publish->topic);
    return false;
  }
  MqttDelivery delivery{.topic = std::move(publish->topic),
                        .payload = std::move(publish->payload),
                        .qos = publish->qos,
                        .retain = publish->retain,
                        .dup = publish->dup,
                        .user_properties = std::move(publish->user_properties),
                        .token = 0};
  {
    std::lock_guard lock(mu_);
    if (paused_) {
      return true;  // left unacknowledged: the session's next connection gets it again
    }
    if (delivery.qos == 1) {
      const auto token = window_.Deliver(publish->packet_id);
      if (!token) {
        return true;  // this packet id is already with the application
      }
      delivery.token = *token;
    }
  }
  if (!handler_) {
    Ack(delivery.token);
    return true;
  }
  try {
    handler_(std::move(delivery));
  } catch (const std::exception& e) {
    // Not acknowledged: the message comes again on the next connection.
    spdlog::error("mqtt {}: message handler threw: {}", masked_url_, e.what());
  }
  return true;
}

bool MqttConsumer::OnSuback(const mqtt::Packet& packet) {
  auto suback = mqtt::DecodeSuback(packet.body);
  if (!suback.ok()) {
    spdlog::error("mqtt {}: {}", masked_url_, std::string(suback.status().message()));
    return false;
  }
  bool all = suback->packet_id == kSubscribePacketId;
  for (size_t i = 0; i < suback->reasons.size(); ++i) {
    if (suback->reasons[i] >= 0x80) {
      all = false;
      spdlog::error("mqtt {}: subscription to '{}' refused: {} (0x{:02x})", masked_url_,
                    i < options_.subscriptions.size() ? options_.subscriptions[i].filter : "",
                    ReasonName(suback->reasons[i]), suback->reasons[i]);
    }
  }
  if (all) {
    {
      std::lock_guard lock(mu_);
      subscribed_ = true;
    }
    changed_.notify_all();
  }
  return true;
}

}  // namespace iot::common
