#include "subscription.h"

#include "iot/common/backoff.h"
#include "scenarios.h"

namespace iotbench {
namespace {

using Json = nlohmann::json;

constexpr auto kCallTimeout = std::chrono::seconds(30);
constexpr std::size_t kAckBatch = 50;
constexpr int kBacklogLength = 1'000'000;
constexpr auto kAckInterval = std::chrono::milliseconds(100);
const std::string kRf = "iot.rule_forwarding.v1.";

absl::Status Annotate(const std::string& call, const absl::Status& status) {
  return {status.code(), call + ": " + std::string(status.message())};
}

/// Errors a new stream cannot change: the application's request is wrong.
bool Permanent(const absl::Status& status) {
  return absl::IsInvalidArgument(status) || absl::IsNotFound(status) ||
         absl::IsPermissionDenied(status) || absl::IsUnimplemented(status);
}

}  // namespace

Subscription::Subscription(const BenchContext& context, Handler handler)
    : context_(context),
      client_(context.config.rule_forwarding_addr, context.config.api_key),
      handler_(std::move(handler)),
      group_("bench-" + context.product_id) {}

Subscription::~Subscription() { Stop(); }

absl::Status Subscription::Start() {
  for (const auto& [service, method] :
       {std::pair{"Subscriptions", "CreateConsumerGroup"}, std::pair{"Subscriptions", "Subscribe"},
        std::pair{"Rules", "CreateRule"}}) {
    if (auto status = client_.Check(kRf + service, method); !status.ok()) {
      return status;
    }
  }
  // A backlog far beyond the default 100,000: when the platform is pushed beyond what it (or
  // this consumer) keeps up with, the stream's MAXLEN trimming would drop what the bench has not
  // read yet and count as loss; retention is not what the bench measures.
  auto group = client_.Call(
      kRf + "Subscriptions", "CreateConsumerGroup",
      {{"group", {{"group_name", group_}, {"max_backlog_length", kBacklogLength}}}}, kCallTimeout);
  if (!group.ok()) {
    return Annotate("CreateConsumerGroup", group.status());
  }
  group_created_ = true;
  const Json rule = {{"name", "iot-bench " + context_.product_id},
                     {"description", "created and deleted by iot-bench"},
                     {"resource", "device.property"},
                     {"product_id", context_.product_id},
                     {"sql", "SELECT *"},
                     {"actions", Json::array({{{"type", "consumer_group"},
                                               {"config_json", Json{{"group", group_}}.dump()}}})}};
  auto created = client_.Call(kRf + "Rules", "CreateRule", rule, kCallTimeout);
  if (!created.ok()) {
    return Annotate("CreateRule", created.status());
  }
  rule_id_ = created->value("rule_id", "");
  if (auto status = Open(); !status.ok()) {
    return status;
  }
  reader_ = std::thread([this] { Run(); });
  acker_ = std::thread([this] { Acker(); });
  return absl::OkStatus();
}

absl::Status Subscription::Open() {
  auto stream = client_.OpenStream(kRf + "Subscriptions", "Subscribe");
  if (!stream.ok()) {
    return Annotate("Subscribe", stream.status());
  }
  std::shared_ptr<DynamicClient::Stream> opened = *std::move(stream);
  if (!opened->Write(
          {{"start",
            {{"group_name", group_}, {"consumer_name", "iot-bench"}, {"max_in_flight", 1000}}}})) {
    return Annotate("Subscribe", opened->Finish());
  }
  const std::lock_guard lock(mutex_);
  if (stopping_) {  // Stop() came while this stream opened: nobody would cancel it
    opened->Cancel();
    return absl::CancelledError("stopping");
  }
  stream_ = std::move(opened);
  return absl::OkStatus();
}

void Subscription::Run() {
  iot::common::Backoff backoff(std::chrono::milliseconds(200), std::chrono::milliseconds(5000));
  while (true) {
    std::shared_ptr<DynamicClient::Stream> stream;
    {
      const std::lock_guard lock(mutex_);
      stream = stream_;
    }
    if (stream) {
      while (auto response = stream->Read()) {
        const Json& message = (*response)["message"];
        SubscriptionMessage received{
            .device_id = message.value("device_id", ""),
            .delivery_id = message.value("delivery_id", ""),
            .redelivered = message.value("redelivered", false),
            .payload = Json::parse(message.value("payload_json", ""), nullptr, false)};
        handler_(received);
        backoff.Reset();
        bool flush = false;
        {
          const std::lock_guard lock(mutex_);
          acks_.push_back(message.value("message_id", ""));
          flush = acks_.size() >= kAckBatch;
        }
        if (flush) {
          FlushAcks();
        }
      }
      const absl::Status status = stream->Finish();
      const std::lock_guard lock(mutex_);
      stream_.reset();
      if (stopping_) {
        return;
      }
      last_stream_error_ =
          status.ok() ? absl::UnavailableError("the server ended the stream") : status;
      if (Permanent(status)) {
        ended_ = status;
        return;
      }
    }
    if (!Pause(backoff.Next())) {
      return;
    }
    if (auto status = Open(); !status.ok()) {
      const std::lock_guard lock(mutex_);
      last_stream_error_ = status;
      if (Permanent(status)) {
        ended_ = status;
        return;
      }
      continue;
    }
    resubscribed_.fetch_add(1);
  }
}

void Subscription::FlushAcks() {
  std::shared_ptr<DynamicClient::Stream> stream;
  Json ids = Json::array();
  {
    const std::lock_guard lock(mutex_);
    if (!stream_ || acks_.empty()) {
      return;
    }
    stream = stream_;
    for (auto& id : acks_) {
      ids.push_back(std::move(id));
    }
    acks_.clear();
  }
  // An ack lost with a broken stream costs a redelivery (the message comes again, marked
  // redelivered), not a loss.
  (void)stream->Write({{"ack", {{"message_ids", ids}}}});
}

void Subscription::Acker() {
  while (Pause(kAckInterval)) {
    FlushAcks();
  }
}

bool Subscription::Pause(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  return !stop_cv_.wait_for(lock, delay, [this] { return stopping_; });
}

void Subscription::Stop() {
  {
    std::unique_lock lock(mutex_);
    if (!stopping_) {
      stopping_ = true;
      stop_cv_.notify_all();
      if (stream_) {
        stream_->Cancel();
      }
    }
  }
  if (acker_.joinable()) {
    acker_.join();
  }
  if (reader_.joinable()) {
    reader_.join();
  }
  if (!rule_id_.empty()) {
    (void)client_.Call(kRf + "Rules", "DeleteRule", {{"rule_id", rule_id_}}, kCallTimeout);
    rule_id_.clear();
  }
  if (group_created_) {
    (void)client_.Call(kRf + "Subscriptions", "DeleteConsumerGroup", {{"group_name", group_}},
                       kCallTimeout);
    group_created_ = false;
  }
}

absl::Status Subscription::ended() const {
  const std::lock_guard lock(mutex_);
  return ended_;
}

absl::Status Subscription::last_stream_error() const {
  const std::lock_guard lock(mutex_);
  return last_stream_error_;
}

}  // namespace iotbench
