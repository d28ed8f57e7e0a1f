#include <nlohmann/json.hpp>

#include "iot/command_dispatch/adapters.h"
#include "iot/common/logging.h"

namespace iot::command_dispatch {
namespace {

std::string ReplicaChannel(const std::string& replica_id) { return "cmd:resp:" + replica_id; }

}  // namespace

RedisResponseRouter::RedisResponseRouter(std::shared_ptr<common::RedisClient> redis,
                                         std::string redis_url, std::string replica_id)
    : redis_(std::move(redis)),
      redis_url_(std::move(redis_url)),
      replica_id_(std::move(replica_id)) {}

absl::Status RedisResponseRouter::Start(Deliver deliver, Resync resync) {
  auto subscriber = common::RedisSubscriber::Start(
      redis_url_, {ReplicaChannel(replica_id_)},
      [deliver = std::move(deliver), replica_id = replica_id_](const std::string& /*channel*/,
                                                               const std::string& message) {
        const auto json = nlohmann::json::parse(message, nullptr, false);
        if (!json.is_object() || !json.contains("request_id") || !json.contains("kind")) {
          common::LogWarn("malformed routed response", {{"message", message}});
          return;
        }
        auto kind = ParseKind(json.value("kind", ""));
        deliver({.request_id = json.value("request_id", ""),
                 .kind = kind.value_or(Kind::kCommand),
                 .status = json.value("status", ""),
                 .payload_json = json.value("payload_json", ""),
                 .owner = replica_id});
      },
      std::move(resync));
  if (!subscriber.ok()) {
    return subscriber.status();
  }
  subscriber_ = *std::move(subscriber);
  return absl::OkStatus();
}

void RedisResponseRouter::Stop() { subscriber_.reset(); }

absl::StatusOr<bool> RedisResponseRouter::Forward(const Completion& completion) {
  if (completion.owner.empty() || completion.owner == replica_id_) {
    return false;
  }
  const std::string message = nlohmann::json{
      {"request_id", completion.request_id},
      {"kind", std::string(KindName(completion.kind))},
      {"status", completion.status},
      {"payload_json",
       completion.payload_json}}.dump();
  auto published =
      common::CheckReply(redis_->Command({"PUBLISH", ReplicaChannel(completion.owner), message}));
  if (!published.ok()) {
    return published.status();
  }
  return published->integer > 0;
}

}  // namespace iot::command_dispatch
