// Commands `group` (consumer groups) and `subscribe` (read a group, ack what was printed), over
// iot.rule_forwarding.v1.Subscriptions (rule-forwarding: `iotctl --addr 127.0.0.1:50055 ...`).
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>

#include "cli.h"
#include "client.h"
#include "iot/common/auth.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "output.h"

namespace iotctl {
namespace {

namespace pb = iot::rule_forwarding::v1;

std::unique_ptr<pb::Subscriptions::Stub> Stub(Client& client) {
  return pb::Subscriptions::NewStub(client.channel());
}

void PrintGroups(Client& client, const pb::ListConsumerGroupsResponse& result) {
  if (client.json()) {
    PrintJson(result);
    return;
  }
  Table table({"GROUP", "ACK_TIMEOUT_S", "MAX_LENGTH", "MAX_AGE_S", "CREATED", "DESCRIPTION"});
  for (const auto& g : result.groups()) {
    table.AddRow({g.group_name(), std::to_string(g.ack_timeout_seconds()),
                  std::to_string(g.max_backlog_length()),
                  std::to_string(g.max_backlog_age_seconds()), ReadableTime(g.create_time()),
                  OrDash(g.description())});
  }
  table.Print(std::cout);
}

struct ListOptions {
  pb::ListConsumerGroupsRequest request;
  bool all = false;
};

struct SubscribeOptions {
  std::string group;
  std::string consumer;
  int32_t max_in_flight = 0;
  int64_t count = 0;
  bool no_ack = false;
};

/// Prints every message as one JSON line (flushed), then acks it; stops after `count` messages
/// (0: never) or when the server ends the stream.
void Subscribe(Client& client, const Cli& cli, const SubscribeOptions& options) {
  grpc::ClientContext context;  // no deadline: the stream runs until stopped
  iot::common::SetBearer(context, ResolveApiKey(cli.options));
  auto stub = Stub(client);
  auto stream = stub->Subscribe(&context);
  pb::SubscribeRequest start;
  start.mutable_start()->set_group_name(options.group);
  start.mutable_start()->set_consumer_name(
      options.consumer.empty() ? "iotctl-" + std::to_string(getpid()) : options.consumer);
  start.mutable_start()->set_max_in_flight(options.max_in_flight);
  stream->Write(start);
  google::protobuf::util::JsonPrintOptions json;
  json.preserve_proto_field_names = true;
  pb::SubscribeResponse response;
  int64_t seen = 0;
  while ((options.count == 0 || seen < options.count) && stream->Read(&response)) {
    std::string line;
    (void)google::protobuf::util::MessageToJsonString(response.message(), &line, json);
    std::cout << line << std::endl;
    ++seen;
    if (!options.no_ack) {
      pb::SubscribeRequest ack;
      ack.mutable_ack()->add_message_ids(response.message().message_id());
      stream->Write(ack);
    }
  }
  if (options.count != 0 && seen >= options.count) {
    // The server ends the stream after the acks above; what it sent meanwhile stays unacked
    // and is redelivered after the ack timeout.
    stream->WritesDone();
    while (stream->Read(&response)) {
    }
  }
  const grpc::Status status = stream->Finish();
  if (!status.ok()) {
    throw Failure(client.Report(status, context), {});
  }
}

void AddGroupCreate(CLI::App* group, Cli& cli) {
  auto created = std::make_shared<pb::CreateConsumerGroupRequest>();
  pb::ConsumerGroup& g = *created->mutable_group();
  CLI::App* create = group->add_subcommand("create", "Create a consumer group");
  create
      ->add_option_function<std::string>(
          "NAME", [&g](const std::string& v) { g.set_group_name(v); }, "Group name")
      ->required();
  create->add_option_function<std::string>(
      "--description", [&g](const std::string& v) { g.set_description(v); }, "Description");
  create->add_option_function<int32_t>(
      "--ack-timeout", [&g](const int32_t& v) { g.set_ack_timeout_seconds(v); },
      "Seconds before an unacked message is redelivered (default 30)");
  create->add_option_function<int64_t>(
      "--max-length", [&g](const int64_t& v) { g.set_max_backlog_length(v); },
      "Messages kept at most (default 100000)");
  create->add_option_function<int64_t>(
      "--max-age", [&g](const int64_t& v) { g.set_max_backlog_age_seconds(v); },
      "Seconds a message is kept at most (default 86400)");
  OnRun(create, cli, [created](Client& client) {
    auto stub = Stub(client);
    const auto made = client.Call<pb::ConsumerGroup>([&](auto* context, auto* out) {
      return stub->CreateConsumerGroup(context, *created, out);
    });
    pb::ListConsumerGroupsResponse one;
    *one.add_groups() = made;
    if (client.json()) {
      PrintJson(made);
    } else {
      PrintGroups(client, one);
    }
  });
}

void AddGroupList(CLI::App* group, Cli& cli) {
  auto list_options = std::make_shared<ListOptions>();
  CLI::App* list = group->add_subcommand("list", "List consumer groups");
  list->add_option_function<int32_t>(
          "--limit", [o = list_options.get()](const int32_t& v) { o->request.set_limit(v); },
          "Page size, 1..500 (server default 50)")
      ->check(CLI::Range(1, 500));
  list->add_option_function<std::string>(
      "--marker", [o = list_options.get()](const std::string& v) { o->request.set_marker(v); },
      "Start after this page marker");
  list->add_flag("--all", list_options->all, "Follow the pages to the end");
  OnRun(list, cli, [list_options](Client& client) {
    auto stub = Stub(client);
    PrintGroups(client, client.CallPages<pb::ListConsumerGroupsResponse>(
                            list_options->request, list_options->all,
                            [&](auto* context, const auto& r, auto* out) {
                              return stub->ListConsumerGroups(context, r, out);
                            }));
  });
}

void AddSubscribe(CLI::App& app, Cli& cli) {
  auto sub = std::make_shared<SubscribeOptions>();
  CLI::App* subscribe = app.add_subcommand(
      "subscribe",
      "Print a consumer group's messages as JSON lines as they arrive, acking each once printed");
  subscribe->add_option("--group", sub->group, "Consumer group")->required();
  subscribe->add_option("--consumer", sub->consumer,
                        "Consumer name; the same name resumes its unacked messages "
                        "(default iotctl-<pid>)");
  subscribe
      ->add_option("--max-in-flight", sub->max_in_flight,
                   "Unacked messages at most (server default 100)")
      ->check(CLI::Range(1, 1000));
  subscribe->add_option("--count", sub->count, "Exit after this many messages (default: run on)")
      ->check(CLI::PositiveNumber);
  subscribe->add_flag("--no-ack", sub->no_ack,
                      "Do not ack (the messages are redelivered after the ack timeout)");
  OnRun(subscribe, cli, [sub, &cli](Client& client) { Subscribe(client, cli, *sub); });
}

void AddGroupCommands(CLI::App& app, Cli& cli) {
  CLI::App* group = app.add_subcommand(
      "group", "Consumer groups of application subscriptions (rule-forwarding: --addr host:50055)");
  group->require_subcommand(1);

  AddGroupCreate(group, cli);

  auto name = std::make_shared<std::string>();
  CLI::App* del = group->add_subcommand("delete", "Delete a consumer group and its backlog");
  del->add_option("NAME", *name, "Group name")->required();
  OnRun(del, cli, [name](Client& client) {
    pb::DeleteConsumerGroupRequest request;
    request.set_group_name(*name);
    auto stub = Stub(client);
    const auto response = client.Call<pb::DeleteConsumerGroupResponse>(
        [&](auto* context, auto* out) { return stub->DeleteConsumerGroup(context, request, out); });
    if (client.json()) {
      PrintJson(response);
      return;
    }
    std::cout << "deleted consumer group " << *name << "\n";
  });

  AddGroupList(group, cli);

  AddSubscribe(app, cli);
}

}  // namespace

const GroupRegistration kSubscriptionsRegistration(70, &AddGroupCommands);

}  // namespace iotctl
