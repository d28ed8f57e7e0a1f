#include "iot/common/redis.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "iot/common/redis_subscriber.h"
#include "iot/common/url.h"

namespace iot::common {

struct RedisClient::Connection {
  redisContext* context = nullptr;

  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { Close(); }

  void Close() {
    if (context != nullptr) {
      redisFree(context);
      context = nullptr;
    }
  }
};

namespace {

timeval ToTimeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

RedisReply Convert(const redisReply& raw) {
  RedisReply out;
  switch (raw.type) {
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.str.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = raw.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(raw.elements);
      for (size_t i = 0; i < raw.elements; ++i) {
        out.elements.push_back(Convert(*raw.element[i]));
      }
      break;
    default:
      out.type = RedisReply::Type::kNil;
      break;
  }
  return out;
}

/// Takes ownership of a hiredis reply object.
RedisReply TakeReply(void* raw) {
  RedisReply out = Convert(*static_cast<redisReply*>(raw));
  freeReplyObject(raw);
  return out;
}

/// The error of a failed hiredis call on `context`; `saved_errno` is errno right after it.
absl::Status ConnectionError(const redisContext& context, int saved_errno,
                             std::chrono::milliseconds timeout, const std::string& what) {
  if (context.err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)) {
    return absl::UnavailableError(absl::StrCat(what, ": timed out after ", timeout.count(), " ms"));
  }
  if (context.err == REDIS_ERR_EOF) {
    return absl::UnavailableError(absl::StrCat(what, ": server closed the connection"));
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", context.errstr));
}

struct Argv {
  std::vector<const char*> data;
  std::vector<size_t> sizes;

  template <typename Range>
  explicit Argv(const Range& args) {
    data.reserve(args.size());
    sizes.reserve(args.size());
    for (const auto& arg : args) {
      data.push_back(arg.data());
      sizes.push_back(arg.size());
    }
  }
  [[nodiscard]] int argc() const { return static_cast<int>(data.size()); }
};

}  // namespace

std::string RedisReply::DebugString() const {
  switch (type) {
    case Type::kNil:
      return "(nil)";
    case Type::kStatus:
      return str;
    case Type::kError:
      return absl::StrCat("(error) ", str);
    case Type::kInteger:
      return absl::StrCat("(integer) ", integer);
    case Type::kString:
      return absl::StrCat("\"", absl::CHexEscape(str), "\"");
    case Type::kArray:
      return absl::StrCat("[",
                          absl::StrJoin(elements, ", ",
                                        [](std::string* out, const RedisReply& e) {
                                          out->append(e.DebugString());
                                        }),
                          "]");
  }
  return "?";
}

absl::StatusOr<RedisReply> CheckReply(absl::StatusOr<RedisReply> reply) {
  if (reply.ok() && reply->is_error()) {
    return absl::FailedPreconditionError(absl::StrCat("redis: ", reply->str));
  }
  return reply;
}

absl::StatusOr<std::unique_ptr<RedisClient>> RedisClient::Create(RedisOptions options) {
  auto url = ParseUrl(options.url, 6379);
  if (!url.ok()) {
    return url.status();
  }
  if (url->scheme != "redis") {
    return absl::InvalidArgumentError(
        absl::StrCat("Redis URL '", MaskUrl(options.url), "' must start with redis://"));
  }
  Target target{
      .host = url->host, .port = url->port, .user = url->user, .password = url->password, .db = 0};
  if (!url->path.empty() && (!absl::SimpleAtoi(url->path, &target.db) || target.db < 0)) {
    return absl::InvalidArgumentError(absl::StrCat("Redis URL '", MaskUrl(options.url),
                                                   "': bad database number '", url->path, "'"));
  }
  if (options.pool_size == 0) {
    return absl::InvalidArgumentError("Redis pool_size must be at least 1");
  }
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) {
    return absl::InvalidArgumentError("Redis timeouts must be positive");
  }
  return std::unique_ptr<RedisClient>(new RedisClient(std::move(options), std::move(target)));
}

RedisClient::RedisClient(RedisOptions options, Target target)
    : options_(std::move(options)), target_(std::move(target)), masked_url_(MaskUrl(options_.url)) {
  idle_.reserve(options_.pool_size);
  for (size_t i = 0; i < options_.pool_size; ++i) {
    idle_.push_back(std::make_unique<Connection>());
  }
}

RedisClient::~RedisClient() = default;

absl::Status RedisClient::Connect(Connection& connection) {
  const std::string what = absl::StrCat("redis ", masked_url_);
  redisContext* context = redisConnectWithTimeout(target_.host.c_str(), target_.port,
                                                  ToTimeval(options_.connect_timeout));
  if (context == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": cannot allocate a context"));
  }
  connection.context = context;
  if (context->err != 0) {
    const int saved_errno = errno;
    absl::Status status = ConnectionError(*context, saved_errno, options_.connect_timeout,
                                          absl::StrCat(what, ": connect"));
    connection.Close();
    return status;
  }
  // The handshake is bounded by the connect timeout, later commands by the command timeout.
  redisSetTimeout(context, ToTimeval(options_.connect_timeout));
  redisEnableKeepAlive(context);

  auto handshake = [&](std::span<const std::string_view> args,
                       const char* step) -> absl::StatusOr<RedisReply> {
    Argv argv(args);
    void* raw = redisCommandArgv(context, argv.argc(), argv.data.data(), argv.sizes.data());
    const int saved_errno = errno;
    if (raw == nullptr) {
      return ConnectionError(*context, saved_errno, options_.connect_timeout,
                             absl::StrCat(what, ": ", step));
    }
    return TakeReply(raw);
  };

  if (!target_.password.empty()) {
    std::vector<std::string_view> auth{"AUTH"};
    if (!target_.user.empty()) {
      auth.emplace_back(target_.user);
    }
    auth.emplace_back(target_.password);
    auto reply = handshake(auth, "AUTH");
    if (!reply.ok() || reply->is_error()) {
      connection.Close();
      return reply.ok() ? absl::UnauthenticatedError(
                              absl::StrCat(what, ": authentication failed: ", reply->str))
                        : reply.status();
    }
  }
  if (target_.db != 0) {
    const std::string db = std::to_string(target_.db);
    const std::string_view select[] = {"SELECT", db};
    auto reply = handshake(select, "SELECT");
    if (!reply.ok() || reply->is_error()) {
      connection.Close();
      return reply.ok() ? absl::FailedPreconditionError(
                              absl::StrCat(what, ": SELECT ", target_.db, " failed: ", reply->str))
                        : reply.status();
    }
  }
  redisSetTimeout(context, ToTimeval(options_.command_timeout));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RedisClient::Connection>> RedisClient::Acquire() {
  std::unique_ptr<Connection> connection;
  {
    std::unique_lock lock(mutex_);
    slot_free_.wait(lock, [this] { return !idle_.empty(); });
    connection = std::move(idle_.back());
    idle_.pop_back();
    if (connection->context != nullptr) {
      return connection;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now < next_connect_) {
      const auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(next_connect_ - now).count();
      absl::Status status(
          last_connect_error_.code(),
          absl::StrCat(last_connect_error_.message(), " (next attempt in ", wait, " ms)"));
      idle_.push_back(std::move(connection));
      lock.unlock();
      slot_free_.notify_one();
      return status;
    }
  }

  absl::Status status = Connect(*connection);
  std::unique_lock lock(mutex_);
  if (status.ok()) {
    if (!last_connect_error_.ok()) {
      spdlog::info("redis {}: connected again", masked_url_);
    }
    backoff_.Reset();
    last_connect_error_ = absl::OkStatus();
    return connection;
  }
  if (last_connect_error_.ok()) {
    spdlog::warn("{}; retrying with backoff", std::string(status.message()));
  }
  last_connect_error_ = status;
  next_connect_ = std::chrono::steady_clock::now() + backoff_.Next();
  idle_.push_back(std::move(connection));
  lock.unlock();
  slot_free_.notify_one();
  return status;
}

void RedisClient::Release(std::unique_ptr<Connection> connection) {
  {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(connection));
  }
  slot_free_.notify_one();
}

absl::StatusOr<RedisReply> RedisClient::Command(std::span<const std::string_view> args) {
  if (args.empty()) {
    return absl::InvalidArgumentError("redis: empty command");
  }
  auto connection = Acquire();
  if (!connection.ok()) {
    return connection.status();
  }
  redisContext* context = (*connection)->context;
  Argv argv(args);
  void* raw = redisCommandArgv(context, argv.argc(), argv.data.data(), argv.sizes.data());
  const int saved_errno = errno;
  absl::StatusOr<RedisReply> result;
  if (raw == nullptr) {
    result = ConnectionError(*context, saved_errno, options_.command_timeout,
                             absl::StrCat("redis ", masked_url_, ": ", std::string(args.front())));
    spdlog::warn("{}; dropping the connection", std::string(result.status().message()));
    (*connection)->Close();
  } else {
    result = TakeReply(raw);
  }
  Release(*std::move(connection));
  return result;
}

absl::StatusOr<RedisReply> RedisClient::Command(std::initializer_list<std::string_view> args) {
  return Command(std::span<const std::string_view>(args.begin(), args.size()));
}

absl::StatusOr<RedisReply> RedisClient::Command(const std::vector<std::string>& args) {
  std::vector<std::string_view> views(args.begin(), args.end());
  return Command(std::span<const std::string_view>(views));
}

absl::StatusOr<std::vector<RedisReply>> RedisClient::Pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  std::vector<RedisReply> replies;
  if (commands.empty()) {
    return replies;
  }
  for (const auto& command : commands) {
    if (command.empty()) {
      return absl::InvalidArgumentError("redis: empty command in pipeline");
    }
  }
  auto connection = Acquire();
  if (!connection.ok()) {
    return connection.status();
  }
  redisContext* context = (*connection)->context;
  absl::Status status;
  for (const auto& command : commands) {
    Argv argv(command);
    if (redisAppendCommandArgv(context, argv.argc(), argv.data.data(), argv.sizes.data()) !=
        REDIS_OK) {
      const int saved_errno = errno;
      status = ConnectionError(*context, saved_errno, options_.command_timeout,
                               absl::StrCat("redis ", masked_url_, ": pipeline"));
      break;
    }
  }
  replies.reserve(commands.size());
  while (status.ok() && replies.size() < commands.size()) {
    void* raw = nullptr;
    if (redisGetReply(context, &raw) != REDIS_OK || raw == nullptr) {
      const int saved_errno = errno;
      status = ConnectionError(*context, saved_errno, options_.command_timeout,
                               absl::StrCat("redis ", masked_url_, ": pipeline"));
      break;
    }
    replies.push_back(TakeReply(raw));
  }
  if (!status.ok()) {
    // Unread replies would be taken for the answers to later commands: drop the connection.
    spdlog::warn("{}; dropping the connection", std::string(status.message()));
    (*connection)->Close();
  }
  Release(*std::move(connection));
  if (!status.ok()) {
    return status;
  }
  return replies;
}

absl::Status RedisClient::Ping() {
  auto reply = Command({"PING"});
  if (!reply.ok()) {
    return reply.status();
  }
  if (reply->is_error() && reply->str.starts_with("NOAUTH")) {
    return absl::UnauthenticatedError(absl::StrCat("redis ", masked_url_, ": ", reply->str));
  }
  if (reply->type != RedisReply::Type::kStatus || reply->str != "PONG") {
    return absl::UnavailableError(
        absl::StrCat("redis ", masked_url_, ": PING answered ", reply->DebugString()));
  }
  return absl::OkStatus();
}

}  // namespace iot::common

// --- RedisSubscriber (here: it uses the client's connection handshake and reply conversion) ---

namespace iot::common {

absl::StatusOr<std::unique_ptr<RedisSubscriber>> RedisSubscriber::Start(
    std::string url, std::vector<std::string> channels, Handler on_message,
    ResyncHandler on_resync) {
  if (channels.empty()) {
    return absl::InvalidArgumentError("redis subscriber: no channels");
  }
  auto client = RedisClient::Create({.url = std::move(url), .pool_size = 1});
  if (!client.ok()) {
    return client.status();
  }
  return std::unique_ptr<RedisSubscriber>(new RedisSubscriber(
      *std::move(client), std::move(channels), std::move(on_message), std::move(on_resync)));
}

RedisSubscriber::RedisSubscriber(std::unique_ptr<RedisClient> client,
                                 std::vector<std::string> channels, Handler on_message,
                                 ResyncHandler on_resync)
    : client_(std::move(client)),
      channels_(std::move(channels)),
      on_message_(std::move(on_message)),
      on_resync_(std::move(on_resync)) {
  thread_ = std::thread([this] { Run(); });
}

RedisSubscriber::~RedisSubscriber() {
  stop_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
}

bool RedisSubscriber::WaitSubscribed(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!subscribed_.load()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void RedisSubscriber::Run() {
  Backoff backoff;
  while (!stop_) {
    absl::Status status = RunOnce();
    subscribed_ = false;
    if (stop_) {
      break;
    }
    const auto delay = backoff.Next();
    spdlog::warn("redis subscriber {}: {}; reconnecting in {} ms", client_->masked_url_,
                 std::string(status.message()), delay.count());
    const auto until = std::chrono::steady_clock::now() + delay;
    while (!stop_ && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (status.ok()) {
      backoff.Reset();
    }
  }
}

absl::Status RedisSubscriber::RunOnce() {
  RedisClient::Connection connection;
  if (absl::Status s = client_->Connect(connection); !s.ok()) {
    return s;
  }
  redisContext* context = connection.context;
  std::vector<std::string_view> args{"SUBSCRIBE"};
  args.insert(args.end(), channels_.begin(), channels_.end());
  Argv argv(args);
  if (redisAppendCommandArgv(context, argv.argc(), argv.data.data(), argv.sizes.data()) !=
      REDIS_OK) {
    return absl::UnavailableError(absl::StrCat("SUBSCRIBE: ", context->errstr));
  }
  for (int done = 0; done == 0;) {
    if (redisBufferWrite(context, &done) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat("SUBSCRIBE: ", context->errstr));
    }
  }
  size_t confirmed = 0;
  while (!stop_) {
    void* raw = nullptr;
    if (redisGetReplyFromReader(context, &raw) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat("protocol error: ", context->errstr));
    }
    if (raw == nullptr) {
      // Nothing buffered: wait for the socket, waking up to notice stop_.
      pollfd pfd{.fd = context->fd, .events = POLLIN, .revents = 0};
      const int ready = poll(&pfd, 1, 200);
      if (ready < 0 && errno != EINTR) {
        return absl::UnavailableError(absl::StrCat("poll: ", std::strerror(errno)));
      }
      if (ready > 0 && redisBufferRead(context) != REDIS_OK) {
        return ConnectionError(*context, errno, client_->options_.command_timeout, "read");
      }
      continue;
    }
    RedisReply reply = TakeReply(raw);
    if (reply.type != RedisReply::Type::kArray || reply.elements.size() < 3) {
      continue;
    }
    const std::string& kind = reply.elements[0].str;
    if (kind == "subscribe") {
      if (++confirmed == channels_.size()) {
        spdlog::info("redis subscriber {}: subscribed to {}", client_->masked_url_,
                     absl::StrJoin(channels_, ", "));
        // The resync first: whoever waits for subscribed() finds it done.
        if (on_resync_) {
          on_resync_();
        }
        subscribed_ = true;
      }
    } else if (kind == "message" && on_message_) {
      on_message_(reply.elements[1].str, reply.elements[2].str);
    }
  }
  return absl::OkStatus();
}

}  // namespace iot::common
