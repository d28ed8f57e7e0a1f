#include "iot/device_gateway/pipeline.h"

#include <functional>

#include "iot/common/backoff.h"
#include "iot/common/logging.h"
#include "iot/common/metrics.h"

namespace iot::device_gateway {
namespace {

using Clock = std::chrono::steady_clock;

const std::string& DeviceOf(const WorkItem& item) {
  return std::visit([](const auto& value) -> const std::string& { return value.device_id; }, item);
}

/// The device an item names, for items whose topic named none.
bool HasDevice(const WorkItem& item) { return !DeviceOf(item).empty(); }

}  // namespace

bool UplinkPipeline::HasWork(Owner owner, const Outputs& out) {
  switch (owner) {
    case Owner::kShadow:
      return out.shadow_reports.reports_size() > 0 || !out.shadow_set_results.empty() ||
             out.presence.events_size() > 0 || !out.shadow_gets.empty() || !out.replies.empty();
    case Owner::kCommands:
      return out.responses.responses_size() > 0 || out.presence.events_size() > 0;
    case Owner::kRules:
      return out.records.records_size() > 0;
  }
  return false;
}

void UplinkPipeline::MergeInto(Owner owner, const Outputs& from, Outputs& to) {
  switch (owner) {
    case Owner::kShadow:
      to.shadow_reports.MergeFrom(from.shadow_reports);
      to.shadow_set_results.insert(to.shadow_set_results.end(), from.shadow_set_results.begin(),
                                   from.shadow_set_results.end());
      to.presence.MergeFrom(from.presence);
      to.shadow_gets.insert(to.shadow_gets.end(), from.shadow_gets.begin(), from.shadow_gets.end());
      to.replies.insert(to.replies.end(), from.replies.begin(), from.replies.end());
      return;
    case Owner::kCommands:
      to.responses.MergeFrom(from.responses);
      to.presence.MergeFrom(from.presence);
      return;
    case Owner::kRules:
      to.records.MergeFrom(from.records);
      return;
  }
}

std::string_view TargetName(Target target) {
  switch (target) {
    case Target::kThingModelPresence:
      return "thing_model.ReportDevicePresence";
    case Target::kShadowReport:
      return "shadow.ReportProperties";
    case Target::kShadowPropertySet:
      return "shadow.CompletePropertySet";
    case Target::kShadowGet:
      return "shadow.GetDeviceShadowForDevice";
    case Target::kShadowPresence:
      return "shadow.ReportPresence";
    case Target::kCommandResponses:
      return "command_dispatch.CompleteRequests";
    case Target::kCommandPresence:
      return "command_dispatch.ReportPresence";
    case Target::kRuleIngest:
      return "rule_forwarding.Ingest";
  }
  return "unknown";
}

UplinkPipeline::UplinkPipeline(PipelineOptions options, std::shared_ptr<DeviceCache> devices,
                               std::shared_ptr<Downstream> downstream,
                               std::shared_ptr<DeviceStatusSink> device_status,
                               std::shared_ptr<DevicePublisher> publisher, GatewayMetrics& metrics)
    : options_(std::move(options)),
      devices_(std::move(devices)),
      downstream_(std::move(downstream)),
      device_status_(std::move(device_status)),
      publisher_(std::move(publisher)),
      metrics_(metrics),
      ids_(options_.message_id_prefix),
      processor_(ids_, metrics_) {
  options_.shards = std::max<size_t>(options_.shards, 1);
  options_.queue_capacity = std::max<size_t>(options_.queue_capacity, 1);
  options_.max_batch = std::max<size_t>(options_.max_batch, 1);
  options_.owner_batches = std::max<size_t>(options_.owner_batches, 1);
  for (size_t i = 0; i < options_.shards; ++i) {
    auto shard = std::make_unique<Shard>();
    for (size_t o = 0; o < kOwners; ++o) {
      shard->lanes[o] = std::make_unique<Lane>();
      shard->lanes[o]->owner = static_cast<Owner>(o);
    }
    shards_.push_back(std::move(shard));
  }
  for (auto& shard : shards_) {
    for (auto& lane : shard->lanes) {
      lane->thread = std::thread([this, l = lane.get()] { RunLane(*l); });
    }
    shard->sender = std::thread([this, s = shard.get()] { Run(*s); });
  }
}

UplinkPipeline::~UplinkPipeline() { Stop(Clock::now()); }

bool UplinkPipeline::Submit(WorkItem item) {
  Shard& shard = *shards_[std::hash<std::string>{}(DeviceOf(item)) % shards_.size()];
  std::unique_lock lock(shard.mu);
  {
    std::lock_guard stop_lock(stop_mu_);
    if (stopping_) {
      metrics_.lost.Increment();
      common::LogError("gateway stopped: message not handed on", {{"device_id", DeviceOf(item)}});
      return false;
    }
  }
  while (shard.queue.size() >= options_.queue_capacity) {
    Clock::time_point deadline;
    bool stopping = false;
    {
      std::lock_guard stop_lock(stop_mu_);
      deadline = submit_deadline_;
      stopping = stopping_;
    }
    if (stopping || Clock::now() >= deadline) {
      metrics_.lost.Increment();
      common::LogError("gateway stopping with its queue full: message not handed on",
                       {{"device_id", DeviceOf(item)}});
      return false;
    }
    // Re-checks the shutdown deadline at least every 100 ms.
    shard.changed.wait_for(lock, std::chrono::milliseconds(100));
  }
  shard.queue.push_back(std::move(item));
  ++shard.submitted;
  metrics_.queue_depth.Increment();
  shard.changed.notify_all();
  return true;
}

void UplinkPipeline::BeginShutdown(Clock::time_point deadline) {
  std::lock_guard lock(stop_mu_);
  submit_closed_ = true;
  submit_deadline_ = std::min(submit_deadline_, deadline);
}

void UplinkPipeline::Stop(Clock::time_point deadline) {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) {
      drain_deadline_ = std::min(drain_deadline_, deadline);
    } else {
      stopping_ = true;
      drain_deadline_ = deadline;
      submit_deadline_ = std::min(submit_deadline_, deadline);
    }
  }
  stop_changed_.notify_all();
  size_t left = 0;
  for (auto& shard : shards_) {
    { std::lock_guard lock(shard->mu); }
    shard->changed.notify_all();
    if (shard->sender.joinable()) {
      shard->sender.join();
    }
    // The sender hands nothing more on: the lanes finish what they hold (or give up at the
    // deadline, counting it) and stop.
    for (auto& lane : shard->lanes) {
      {
        std::lock_guard lock(lane->mu);
        lane->closed = true;
      }
      lane->changed.notify_all();
      if (lane->thread.joinable()) {
        lane->thread.join();
      }
    }
    std::lock_guard lock(shard->mu);
    left += shard->queue.size();
    shard->queue.clear();
  }
  if (left > 0) {
    metrics_.lost.Increment(static_cast<double>(left));
    metrics_.queue_depth.Decrement(static_cast<double>(left));
    common::LogError("gateway stopped before handing on every queued message", {{"lost", left}});
  }
}

size_t UplinkPipeline::queued() {
  size_t total = 0;
  for (auto& shard : shards_) {
    std::lock_guard lock(shard->mu);
    total += shard->queue.size();
  }
  return total;
}

std::function<bool()> UplinkPipeline::Barrier() {
  std::vector<std::pair<const Shard*, uint64_t>> marks;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mu);
    marks.emplace_back(shard.get(), shard->submitted);
  }
  return [this, marks = std::move(marks)] {
    {
      std::lock_guard lock(stop_mu_);
      if (stopping_) {
        return true;
      }
    }
    for (const auto& [shard, mark] : marks) {
      if (shard->finished.load(std::memory_order_acquire) < mark) {
        return false;
      }
    }
    return true;
  };
}

bool UplinkPipeline::Stopped() {
  std::lock_guard lock(stop_mu_);
  return stopping_ && Clock::now() >= drain_deadline_;
}

bool UplinkPipeline::Wait(std::chrono::milliseconds delay) {
  std::unique_lock lock(stop_mu_);
  const auto until = Clock::now() + delay;
  stop_changed_.wait_until(lock, stopping_ ? std::min(until, drain_deadline_) : until,
                           [&] { return stopping_ && Clock::now() >= drain_deadline_; });
  return !(stopping_ && Clock::now() >= drain_deadline_);
}

template <typename Call>
bool UplinkPipeline::Deliver(Target target, Call&& call) {
  const std::string name(TargetName(target));
  common::Backoff backoff(options_.retry_initial, options_.retry_max);
  while (true) {
    const auto start = Clock::now();
    const absl::Status status = call();
    metrics_.call_duration.Add({{"target", name}}, common::LatencyBuckets())
        .Observe(std::chrono::duration<double>(Clock::now() - start).count());
    if (status.ok()) {
      return true;
    }
    metrics_.call_errors
        .Add({{"target", name}, {"code", std::string(absl::StatusCodeToString(status.code()))}})
        .Increment();
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      metrics_.call_dropped.Add({{"target", name}}).Increment();
      common::LogError("owner refused a batch for good; skipped",
                       {{"target", name}, {"error", std::string(status.message())}});
      return true;
    }
    const auto delay = backoff.Next();
    if (backoff.attempts() == 1 || backoff.attempts() % 20 == 0) {
      common::LogWarn("owner unavailable, retrying",
                      {{"target", name},
                       {"code", std::string(absl::StatusCodeToString(status.code()))},
                       {"error", std::string(status.message())},
                       {"attempts", backoff.attempts()},
                       {"retry_in_ms", delay.count()}});
    }
    if (!Wait(delay)) {
      return false;
    }
  }
}

std::optional<std::shared_ptr<const DeviceInfo>> UplinkPipeline::Resolve(const WorkItem& item) {
  const std::string& device_id = DeviceOf(item);
  common::Backoff backoff(options_.retry_initial, options_.retry_max);
  while (true) {
    auto device = devices_->Get(device_id);
    if (device.ok()) {
      return *device;
    }
    const auto code = device.status().code();
    if (code == absl::StatusCode::kNotFound || code == absl::StatusCode::kInvalidArgument) {
      return std::shared_ptr<const DeviceInfo>();
    }
    metrics_.call_errors
        .Add({{"target", "thing_model.GetDeviceContext"},
              {"code", std::string(absl::StatusCodeToString(code))}})
        .Increment();
    if (backoff.attempts() == 0) {
      common::LogWarn(
          "cannot resolve device, retrying",
          {{"device_id", device_id}, {"error", std::string(device.status().message())}});
    }
    if (!Wait(backoff.Next())) {
      return std::nullopt;
    }
  }
}

bool UplinkPipeline::FlushShadow(const Outputs& out) {
  if (out.shadow_reports.reports_size() > 0 && !Deliver(Target::kShadowReport, [&] {
        return downstream_->ReportProperties(out.shadow_reports);
      })) {
    return false;
  }
  for (const auto& result : out.shadow_set_results) {
    if (!Deliver(Target::kShadowPropertySet,
                 [&] { return downstream_->CompletePropertySet(result); })) {
      return false;
    }
  }
  if (out.presence.events_size() > 0 && !Deliver(Target::kShadowPresence, [&] {
        return downstream_->ShadowPresence(out.presence);
      })) {
    return false;
  }
  std::vector<DeviceReply> replies;
  for (const auto& get : out.shadow_gets) {
    std::optional<std::string> body;
    if (!Deliver(Target::kShadowGet, [&]() -> absl::Status {
          auto shadow = downstream_->GetDeviceShadow(get);
          if (shadow.ok()) {
            body = *std::move(shadow);
            return absl::OkStatus();
          }
          // No shadow for the device: nothing to answer.
          return shadow.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus()
                                                                       : shadow.status();
        })) {
      return false;
    }
    if (body) {
      replies.push_back({.device_topic = DownlinkTopic(DownlinkKind::kShadowResponse,
                                                       get.device().device_id(), get.request_id()),
                         .payload = *std::move(body)});
    }
  }
  replies.insert(replies.end(), out.replies.begin(), out.replies.end());
  for (const auto& reply : replies) {
    // Best effort, as any downlink: a device that went away asks again.
    auto sent = publisher_->Publish(reply.device_topic, reply.payload, 1);
    const char* result = !sent.ok() ? "error" : (*sent ? "online" : "offline");
    metrics_.downlink.Add({{"kind", "reply"}, {"result", result}}).Increment();
    if (!sent.ok()) {
      common::LogWarn(
          "reply to a device not published",
          {{"topic", reply.device_topic}, {"error", std::string(sent.status().message())}});
    }
  }
  return true;
}

bool UplinkPipeline::FlushCommands(const Outputs& out) {
  if (out.responses.responses_size() > 0 && !Deliver(Target::kCommandResponses, [&] {
        return downstream_->CompleteRequests(out.responses);
      })) {
    return false;
  }
  return out.presence.events_size() == 0 || Deliver(Target::kCommandPresence, [&] {
           return downstream_->CommandPresence(out.presence);
         });
}

bool UplinkPipeline::Flush(Owner owner, const Outputs& out) {
  switch (owner) {
    case Owner::kShadow:
      return FlushShadow(out);
    case Owner::kCommands:
      return FlushCommands(out);
    case Owner::kRules:
      return out.records.records_size() == 0 ||
             Deliver(Target::kRuleIngest, [&] { return downstream_->Ingest(out.records); });
  }
  return true;
}

void UplinkPipeline::Done(Batch& batch, bool ok) {
  if (!ok) {
    batch.lost.store(true);
  }
  if (batch.remaining.fetch_sub(1) != 1) {
    return;
  }
  if (Shard* shard = batch.shard; shard != nullptr) {
    // Lanes finish batches out of order (a lane with nothing to do finishes at once): count a
    // batch only when every earlier one of the shard is finished too.
    std::lock_guard lock(shard->finish_mu);
    batch.complete = true;
    while (!shard->unfinished.empty() && shard->unfinished.front()->complete) {
      shard->finished.fetch_add(shard->unfinished.front()->messages, std::memory_order_release);
      shard->unfinished.pop_front();
    }
  }
  metrics_.queue_depth.Decrement(static_cast<double>(batch.messages));
  if (batch.lost.load()) {
    metrics_.lost.Increment(static_cast<double>(batch.messages));
    common::LogError("gateway stopped with messages not handed on", {{"lost", batch.messages}});
  }
}

bool UplinkPipeline::HandOff(Lane& lane, const std::shared_ptr<Batch>& batch) {
  if (!HasWork(lane.owner, batch->out)) {
    Done(*batch, true);
    return true;
  }
  std::unique_lock lock(lane.mu);
  while (lane.queue.size() >= options_.owner_batches) {
    if (Stopped()) {
      lock.unlock();
      Done(*batch, false);
      return false;
    }
    // Re-checks the drain deadline at least every 100 ms (the lane may have given up).
    lane.changed.wait_for(lock, std::chrono::milliseconds(100));
  }
  lane.queue.push_back(batch);
  lane.changed.notify_all();
  return true;
}

void UplinkPipeline::RunLane(Lane& lane) {
  bool stopped = false;
  std::vector<std::shared_ptr<Batch>> taken;
  while (true) {
    {
      std::unique_lock lock(lane.mu);
      lane.changed.wait(lock, [&] { return lane.closed || !lane.queue.empty(); });
      if (lane.queue.empty()) {
        return;  // closed, everything handed on
      }
      taken.assign(lane.queue.begin(), lane.queue.end());
      lane.queue.clear();
    }
    lane.changed.notify_all();  // room for the sender
    if (!stopped) {
      if (taken.size() == 1) {
        stopped = !Flush(lane.owner, taken.front()->out);
      } else {
        Outputs merged;
        for (const auto& batch : taken) {
          MergeInto(lane.owner, batch->out, merged);
        }
        stopped = !Flush(lane.owner, merged);
      }
    }
    // Once stopped for good, whatever else arrives is counted as lost, not handed on.
    for (const auto& batch : taken) {
      Done(*batch, !stopped);
    }
    taken.clear();
  }
}

void UplinkPipeline::Run(Shard& shard) {
  std::vector<WorkItem> batch;
  while (true) {
    {
      std::unique_lock lock(shard.mu);
      shard.changed.wait(lock, [&] {
        std::lock_guard stop_lock(stop_mu_);
        return stopping_ || !shard.queue.empty();
      });
      if (shard.queue.empty()) {
        return;  // stopping, everything delivered
      }
      while (!shard.queue.empty() && batch.size() < options_.max_batch) {
        batch.push_back(std::move(shard.queue.front()));
        shard.queue.pop_front();
      }
    }
    shard.changed.notify_all();  // room for Submit()
    auto handed = std::make_shared<Batch>();
    handed->shard = &shard;
    handed->messages = batch.size();
    {
      std::lock_guard lock(shard.finish_mu);
      shard.unfinished.push_back(handed);
    }
    Outputs& out = handed->out;
    bool stopped = false;
    for (const WorkItem& item : batch) {
      if (!HasDevice(item)) {
        // A relayed topic without a device: counted when refused, nobody to tell.
        continue;
      }
      auto device = Resolve(item);
      if (!device) {
        stopped = true;
        break;
      }
      if (*device == nullptr) {
        metrics_.Rejected(RejectReason::kUnknownDevice);
        common::LogWarn("message of an unknown device dropped", {{"device_id", DeviceOf(item)}});
        continue;
      }
      if (const auto* presence = std::get_if<PresenceEvent>(&item)) {
        bool known = true;
        if (!Deliver(Target::kThingModelPresence, [&]() -> absl::Status {
              absl::Status status = device_status_->ReportPresence(*presence);
              if (status.code() == absl::StatusCode::kNotFound) {
                known = false;
                return absl::OkStatus();
              }
              return status;
            })) {
          stopped = true;
          break;
        }
        if (!known) {
          continue;
        }
      }
      try {
        std::visit([&](const auto& value) { processor_.Process(**device, value, out); }, item);
      } catch (const std::exception& e) {
        // A bug must not take the shard (and every device on it) down with it.
        metrics_.Rejected(RejectReason::kMalformed);
        common::LogError("device message could not be processed",
                         {{"device_id", DeviceOf(item)}, {"error", e.what()}});
      }
    }
    if (stopped) {
      handed->remaining.store(1);
      Done(*handed, false);
      return;
    }
    for (auto& lane : shard.lanes) {
      (void)HandOff(*lane, handed);
    }
    batch.clear();
  }
}

}  // namespace iot::device_gateway
