#include "change_watcher.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/time.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>

#include "iot/common/backoff.h"

namespace iot::broker {
namespace {

constexpr auto kPollSlice = std::chrono::milliseconds{250};

struct ContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

timeval ToTimeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

ReplyPtr Call(redisContext* context, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  return ReplyPtr(static_cast<redisReply*>(
      redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data())));
}

}  // namespace

ChangeWatcher::ChangeWatcher(common::Url redis, std::chrono::milliseconds timeout,
                             std::chrono::milliseconds resync_interval, Callbacks callbacks)
    : redis_(std::move(redis)),
      timeout_(timeout),
      resync_interval_(resync_interval),
      callbacks_(std::move(callbacks)) {}

ChangeWatcher::~ChangeWatcher() { Stop(); }

void ChangeWatcher::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ChangeWatcher::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

bool ChangeWatcher::Sleep(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  return !stop_cv_.wait_for(lock, delay, [this] { return stopping_; });
}

void ChangeWatcher::Run() {
  common::Backoff backoff;
  bool outage_logged = false;
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) {
        return;
      }
    }
    const bool subscribed = Session();
    callbacks_.on_subscription(false);
    if (subscribed) {
      backoff.Reset();
      outage_logged = false;
    } else if (!outage_logged) {
      callbacks_.log(true, fmt::format("{} subscriber: Redis {}:{} unavailable; retrying with "
                                       "backoff (connected devices are re-checked on reconnect)",
                                       kChannel, redis_.host, redis_.port));
      outage_logged = true;
    }
    if (!Sleep(backoff.Next())) {
      return;
    }
  }
}

namespace {

/// A connection subscribed to kChannel, or null (AUTH failures are logged).
ContextPtr Subscribe(const common::Url& redis, std::chrono::milliseconds timeout,
                     const ChangeWatcher::Callbacks& callbacks) {
  ContextPtr context(redisConnectWithTimeout(redis.host.c_str(), redis.port, ToTimeval(timeout)));
  if (!context || context->err != 0) {
    return nullptr;
  }
  redisSetTimeout(context.get(), ToTimeval(timeout));
  redisEnableKeepAlive(context.get());
  if (!redis.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!redis.user.empty()) {
      auth.push_back(redis.user);
    }
    auth.push_back(redis.password);
    const ReplyPtr reply = Call(context.get(), auth);
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
      callbacks.log(true, fmt::format("{} subscriber: Redis AUTH failed", ChangeWatcher::kChannel));
      return nullptr;
    }
  }
  const ReplyPtr reply = Call(context.get(), {"SUBSCRIBE", ChangeWatcher::kChannel});
  if (!reply || reply->type != REDIS_REPLY_ARRAY) {
    return nullptr;
  }
  return context;
}

/// Sends a PING; false when the connection failed.
bool Ping(redisContext* context) {
  int done = 0;
  redisAppendCommand(context, "PING");
  while (done == 0) {
    if (redisBufferWrite(context, &done) != REDIS_OK) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool ChangeWatcher::Session() {
  const ContextPtr context = Subscribe(redis_, timeout_, callbacks_);
  if (!context) {
    return false;
  }
  callbacks_.log(false, fmt::format("{} subscriber: subscribed", kChannel));
  callbacks_.on_subscription(true);
  // Changes made while we were not subscribed were missed.
  callbacks_.on_resync(true);
  Listen(context.get());
  return true;
}

bool ChangeWatcher::HandleReplies(redisContext* context) {
  bool any = false;
  void* raw = nullptr;
  while (redisGetReplyFromReader(context, &raw) == REDIS_OK && raw != nullptr) {
    const ReplyPtr reply(static_cast<redisReply*>(raw));
    raw = nullptr;
    any = true;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        std::string_view(reply->element[0]->str, reply->element[0]->len) == "message" &&
        reply->element[2]->type == REDIS_REPLY_STRING) {
      Handle(std::string(reply->element[2]->str, reply->element[2]->len));
    }
  }
  return any;
}

void ChangeWatcher::Listen(redisContext* context) {
  auto now = std::chrono::steady_clock::now();
  auto next_resync = now + resync_interval_;
  auto next_ping = now + kHeartbeat;
  auto last_reply = now;

  while (true) {
    if (HandleReplies(context)) {
      last_reply = std::chrono::steady_clock::now();
    }
    if (context->err != 0) {
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (stopping_) {
        return;
      }
    }
    now = std::chrono::steady_clock::now();
    if (now >= next_resync) {
      callbacks_.on_resync(false);
      now = std::chrono::steady_clock::now();
      next_resync = now + resync_interval_;
      last_reply = std::max(last_reply, now - kHeartbeat);  // the PINGs wait behind the resync
    }
    if (now - last_reply > kHeartbeatTimeout) {
      callbacks_.log(
          true, fmt::format("{} subscriber: no answer from Redis for {} ms; reconnecting", kChannel,
                            kHeartbeatTimeout.count()));
      return;
    }
    if (now >= next_ping) {
      if (!Ping(context)) {
        return;
      }
      next_ping = now + kHeartbeat;
    }
    pollfd fd{.fd = context->fd, .events = POLLIN, .revents = 0};
    const int ready = poll(&fd, 1, static_cast<int>(kPollSlice.count()));
    if (ready < 0 && errno != EINTR) {
      return;
    }
    if (ready > 0 && redisBufferRead(context) != REDIS_OK) {
      callbacks_.log(true, fmt::format("{} subscriber: connection lost ({}); reconnecting",
                                       kChannel, context->errstr));
      return;
    }
  }
}

void ChangeWatcher::Handle(const std::string& payload) {
  const auto json = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) {
    return;
  }
  const auto kind = json.find("kind");
  const auto device_id = json.find("device_id");
  if (kind == json.end() || device_id == json.end() || !kind->is_string() ||
      !device_id->is_string() || kind->get<std::string>() != "device") {
    return;
  }
  callbacks_.on_device_change(device_id->get<std::string>());
}

}  // namespace iot::broker
