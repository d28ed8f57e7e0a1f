#include "iot/device_gateway/partitions.h"

#include <fmt/format.h>

#include <charconv>
#include <functional>

#include "iot/common/logging.h"

namespace iot::device_gateway {
namespace {

using Clock = std::chrono::steady_clock;

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// KEYS[1] = partition key, ARGV[1] = replica id, ARGV[2] = lease ms.
constexpr std::string_view kRenewScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
constexpr std::string_view kReleaseScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
    "else return 0 end";

absl::Status ReplyError(const absl::StatusOr<common::RedisReply>& reply) {
  if (!reply.ok()) {
    return reply.status();
  }
  if (reply->is_error()) {
    return absl::FailedPreconditionError(reply->str);
  }
  return absl::OkStatus();
}

}  // namespace

size_t FairShare(size_t partitions, size_t replicas) {
  return replicas == 0 ? partitions : (partitions + replicas - 1) / replicas;
}

std::optional<uint32_t> ParsePartitionCount(std::string_view payload) {
  uint32_t count = 0;
  const auto [end, ec] = std::from_chars(payload.data(), payload.data() + payload.size(), count);
  if (ec != std::errc() || end != payload.data() + payload.size() || count == 0 || count > 1024) {
    return std::nullopt;
  }
  return count;
}

// ---- PartitionLeases ----

PartitionLeases::PartitionLeases(std::shared_ptr<common::RedisClient> redis,
                                 const std::string& group, std::string replica_id,
                                 std::chrono::milliseconds lease)
    : redis_(std::move(redis)),
      prefix_(fmt::format("gw:{}:", group)),
      replica_id_(std::move(replica_id)),
      lease_(lease) {}

std::string PartitionLeases::PartitionKey(uint32_t partition) const {
  return fmt::format("{}part:{}", prefix_, partition);
}

absl::StatusOr<size_t> PartitionLeases::Heartbeat() {
  const int64_t now = UnixMs();
  const std::string members = prefix_ + "members";
  auto replies =
      redis_->Pipeline({{"ZADD", members, std::to_string(now + lease_.count()), replica_id_},
                        {"ZREMRANGEBYSCORE", members, "-inf", std::to_string(now)},
                        {"ZCARD", members}});
  if (!replies.ok()) {
    return replies.status();
  }
  for (const auto& reply : *replies) {
    if (reply.is_error()) {
      return absl::FailedPreconditionError(reply.str);
    }
  }
  return std::max<size_t>(1, static_cast<size_t>(replies->back().integer));
}

absl::StatusOr<bool> PartitionLeases::TryAcquire(uint32_t partition) {
  auto reply = redis_->Command(
      {"SET", PartitionKey(partition), replica_id_, "NX", "PX", std::to_string(lease_.count())});
  if (absl::Status st = ReplyError(reply); !st.ok()) {
    return st;
  }
  return reply->type == common::RedisReply::Type::kStatus;  // OK; nil when held
}

absl::StatusOr<bool> PartitionLeases::Renew(uint32_t partition) {
  auto reply = redis_->Command({"EVAL", kRenewScript, "1", PartitionKey(partition), replica_id_,
                                std::to_string(lease_.count())});
  if (absl::Status st = ReplyError(reply); !st.ok()) {
    return st;
  }
  return reply->integer == 1;
}

absl::Status PartitionLeases::Release(uint32_t partition) {
  return ReplyError(
      redis_->Command({"EVAL", kReleaseScript, "1", PartitionKey(partition), replica_id_}));
}

absl::Status PartitionLeases::Leave() {
  return ReplyError(redis_->Command({"ZREM", prefix_ + "members", replica_id_}));
}

// ---- PartitionMetrics ----

PartitionMetrics::PartitionMetrics(prometheus::Registry& registry)
    : owned(prometheus::BuildGauge()
                .Name("iot_gateway_partitions_owned")
                .Help("Uplink partitions this gateway replica consumes")
                .Register(registry)
                .Add({})),
      total(prometheus::BuildGauge()
                .Name("iot_gateway_partitions_total")
                .Help("Uplink partitions announced by the broker")
                .Register(registry)
                .Add({})),
      changes(prometheus::BuildCounter()
                  .Name("iot_gateway_partition_changes_total")
                  .Help("Uplink partitions acquired, released (handed over) or lost, by event")
                  .Register(registry)) {}

// ---- PartitionOwner ----

PartitionOwner::PartitionOwner(Options options, std::unique_ptr<PartitionLeases> leases,
                               PartitionHooks hooks, PartitionMetrics& metrics)
    : options_(options),
      leases_(std::move(leases)),
      hooks_(std::move(hooks)),
      metrics_(metrics),
      offset_(static_cast<uint32_t>(std::hash<std::string>{}(leases_->replica_id()))),
      last_renewed_(Clock::now()) {}

PartitionOwner::~PartitionOwner() { Stop(); }

void PartitionOwner::SetPartitionCount(uint32_t count) {
  if (count_.exchange(count) != count) {
    metrics_.total.Set(count);
    common::LogInfo("uplink partitions announced by the broker", {{"partitions", count}});
    run_changed_.notify_all();
  }
}

void PartitionOwner::Start() {
  std::lock_guard lock(run_mu_);
  if (!thread_.joinable() && !stopping_) {
    thread_ = std::thread([this] { Run(); });
  }
}

void PartitionOwner::Stop() {
  {
    std::lock_guard lock(run_mu_);
    if (stopped_) {
      return;  // idempotent: the destructor after a shutdown touches nothing
    }
    stopping_ = true;
    stopped_ = true;
  }
  run_changed_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
  std::lock_guard lock(mu_);
  for (auto& [partition, held] : held_) {
    if (!held.draining) {
      held.draining = true;
      held.drained = hooks_.stop(partition);
      held.drain_started = Clock::now();
    }
  }
  metrics_.owned.Set(0);
}

void PartitionOwner::ReleaseAll() {
  std::lock_guard lock(mu_);
  for (const auto& [partition, held] : held_) {
    if (absl::Status st = leases_->Release(partition); !st.ok()) {
      common::LogWarn("partition lease not released (it expires by itself)",
                      {{"partition", partition}, {"error", std::string(st.message())}});
    }
  }
  held_.clear();
  (void)leases_->Leave();
}

std::vector<uint32_t> PartitionOwner::owned() const {
  std::lock_guard lock(mu_);
  std::vector<uint32_t> out;
  for (const auto& [partition, held] : held_) {
    if (!held.draining) {
      out.push_back(partition);
    }
  }
  return out;
}

void PartitionOwner::Run() {
  std::unique_lock lock(run_mu_);
  while (!stopping_) {
    lock.unlock();
    Tick();
    lock.lock();
    run_changed_.wait_for(lock, options_.tick);
  }
}

void PartitionOwner::HandOver(uint32_t partition, Held& held) {
  held.draining = true;
  held.drained = hooks_.stop(partition);
  held.drain_started = Clock::now();
  common::LogInfo("handing an uplink partition over", {{"partition", partition}});
}

void PartitionOwner::LoseAll(const char* why) {
  for (auto& [partition, held] : held_) {
    if (!held.draining) {
      (void)hooks_.stop(partition);
    }
    metrics_.changes.Add({{"event", "lost"}}).Increment();
    common::LogError("uplink partition lost", {{"partition", partition}, {"why", why}});
  }
  held_.clear();
}

void PartitionOwner::Tick() {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  const uint32_t count = count_.load();

  // 1. Stay a member and keep what is held.
  auto replicas = leases_->Heartbeat();
  if (!replicas.ok() || !RenewHeld()) {
    if (!redis_failing_) {
      common::LogWarn(
          "partition leases cannot be renewed: Redis unreachable",
          {{"error", std::string(replicas.ok() ? "renew failed" : replicas.status().message())}});
    }
    redis_failing_ = true;
    // Past the lease another replica may hold them: stop consuming rather than risk two
    // consumers of one partition (the broker keeps their messages meanwhile).
    if (now - last_renewed_ > leases_->lease()) {
      LoseAll("Redis unreachable for longer than the lease");
    }
    metrics_.owned.Set(static_cast<double>(held_.size()));
    return;
  }
  redis_failing_ = false;
  last_renewed_ = now;

  // 2. Hand over what is drained (or waited for too long).
  ReleaseDrained(now);

  // 3. Balance: ceil(partitions / live replicas) each.
  Balance(count, *replicas);
}

bool PartitionOwner::RenewHeld() {
  for (auto it = held_.begin(); it != held_.end();) {
    auto renewed = leases_->Renew(it->first);
    if (!renewed.ok()) {
      return false;
    }
    if (!*renewed) {
      // Another replica holds it now (this one was cut off for longer than the lease).
      if (!it->second.draining) {
        (void)hooks_.stop(it->first);
      }
      metrics_.changes.Add({{"event", "lost"}}).Increment();
      common::LogError("uplink partition lost: its lease is held by another replica",
                       {{"partition", it->first}});
      it = held_.erase(it);
      continue;
    }
    ++it;
  }
  return true;
}

void PartitionOwner::ReleaseDrained(std::chrono::steady_clock::time_point now) {
  for (auto it = held_.begin(); it != held_.end();) {
    Held& held = it->second;
    if (!held.draining) {
      ++it;
      continue;
    }
    const bool drained = held.drained();
    if (!drained && now - held.drain_started < options_.drain_timeout) {
      ++it;
      continue;
    }
    if (!drained) {
      common::LogError(
          "uplink partition handed over before everything taken from it was handed on: the "
          "next holder may overtake it",
          {{"partition", it->first}});
    }
    (void)leases_->Release(it->first);
    metrics_.changes.Add({{"event", "released"}}).Increment();
    common::LogInfo("uplink partition released", {{"partition", it->first}});
    it = held_.erase(it);
  }
}

void PartitionOwner::Balance(uint32_t count, size_t replicas) {
  size_t active = 0;
  for (auto& [partition, held] : held_) {
    if (!held.draining && partition >= count) {
      HandOver(partition, held);  // the broker announced fewer partitions
    }
    active += held.draining ? 0 : 1;
  }
  const size_t target = count == 0 ? 0 : FairShare(count, replicas);
  for (auto it = held_.rbegin(); active > target && it != held_.rend(); ++it) {
    if (!it->second.draining) {
      HandOver(it->first, it->second);
      --active;
    }
  }
  bool scanned = true;
  for (uint32_t i = 0; active < target && i < count; ++i) {
    const uint32_t partition = (offset_ + i) % count;
    if (held_.contains(partition)) {
      continue;
    }
    auto acquired = leases_->TryAcquire(partition);
    if (!acquired.ok()) {
      scanned = false;
      break;
    }
    if (*acquired) {
      held_[partition] = Held{};
      hooks_.start(partition);
      ++active;
      metrics_.changes.Add({{"event", "acquired"}}).Increment();
      common::LogInfo("uplink partition acquired", {{"partition", partition}});
    }
  }
  metrics_.owned.Set(static_cast<double>(active));
  settled_.store(count > 0 && (active >= target || scanned));
}

// ---- PartitionSessions ----

PartitionSessions::PartitionSessions(common::MqttConsumerOptions base, std::string group,
                                     HandlerFactory handlers,
                                     std::chrono::milliseconds drain_timeout)
    : base_(std::move(base)),
      group_(std::move(group)),
      handlers_(std::move(handlers)),
      drain_timeout_(drain_timeout) {}

PartitionSessions::~PartitionSessions() { StopAll(); }

PartitionHooks PartitionSessions::hooks() {
  return {.start = [this](uint32_t partition) { Start(partition); },
          .stop = [this](uint32_t partition) { return Stop(partition); }};
}

void PartitionSessions::JoinStopping(uint32_t partition) {
  std::unique_lock lock(mu_);
  const auto it = stopping_.find(partition);
  if (it == stopping_.end()) {
    return;
  }
  std::thread thread = std::move(it->second.thread);
  stopping_.erase(it);
  lock.unlock();
  if (thread.joinable()) {
    thread.join();
  }
}

void PartitionSessions::Start(uint32_t partition) {
  JoinStopping(partition);  // one session per client id at a time
  common::MqttConsumerOptions options = base_;
  options.client_id = fmt::format("{}-p{}", group_, partition);
  // Retained messages are never device uplink: none at subscribe time (retain handling 2).
  options.subscriptions = {
      {.filter = fmt::format("iot/up/{}/#", partition), .qos = 1, .retain_handling = 2},
      {.filter = fmt::format("iot/presence/{}/+", partition), .qos = 1, .retain_handling = 2}};
  auto created = common::MqttConsumer::Create(options);
  if (!created.ok()) {
    common::LogError(
        "partition session not created",
        {{"partition", partition}, {"error", std::string(created.status().message())}});
    return;
  }
  std::shared_ptr<common::MqttConsumer> session = *std::move(created);
  session->SetHandler(handlers_(partition, session));
  if (absl::Status st = session->Start(); !st.ok()) {
    common::LogError("partition session not started",
                     {{"partition", partition}, {"error", std::string(st.message())}});
    return;
  }
  std::lock_guard lock(mu_);
  sessions_[partition] = std::move(session);
}

std::function<bool()> PartitionSessions::Stop(uint32_t partition) {
  std::shared_ptr<common::MqttConsumer> session;
  {
    std::lock_guard lock(mu_);
    if (auto it = sessions_.find(partition); it != sessions_.end()) {
      session = std::move(it->second);
      sessions_.erase(it);
    }
  }
  JoinStopping(partition);
  auto done = std::make_shared<std::atomic<bool>>(false);
  if (!session) {
    done->store(true);
    return [done] { return done->load(); };
  }
  // Nothing more is taken; what was taken is finished by the pipeline and acknowledged on this
  // connection, then the session closes (off the caller's thread, which renews the leases).
  session->Pause();
  std::thread thread([this, session, done, partition] {
    const auto deadline = std::chrono::steady_clock::now() + drain_timeout_;
    while (!session->WaitDrained(std::chrono::milliseconds(100))) {
      if (abandon_.load() || std::chrono::steady_clock::now() >= deadline) {
        common::LogWarn(
            "uplink partition session closed with messages not acknowledged: the broker delivers "
            "them again",
            {{"partition", partition}, {"unacknowledged", session->unacknowledged()}});
        break;
      }
    }
    session->Stop();
    done->store(true, std::memory_order_release);
  });
  {
    std::lock_guard lock(mu_);
    stopping_[partition] = Stopping{.thread = std::move(thread)};
  }
  return [done] { return done->load(std::memory_order_acquire); };
}

void PartitionSessions::StopAll() {
  std::vector<uint32_t> partitions;
  {
    std::lock_guard lock(mu_);
    for (const auto& [partition, session] : sessions_) {
      partitions.push_back(partition);
    }
  }
  abandon_ = true;
  for (const uint32_t partition : partitions) {
    (void)Stop(partition);
  }
  std::map<uint32_t, Stopping> stopping;
  {
    std::lock_guard lock(mu_);
    stopping.swap(stopping_);
  }
  for (auto& [partition, entry] : stopping) {
    if (entry.thread.joinable()) {
      entry.thread.join();
    }
  }
}

bool PartitionSessions::AllSubscribed() const {
  std::lock_guard lock(mu_);
  for (const auto& [partition, session] : sessions_) {
    if (!session->subscribed()) {
      return false;
    }
  }
  return true;
}

}  // namespace iot::device_gateway
