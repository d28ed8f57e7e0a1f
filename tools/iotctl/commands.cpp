// Command `command`: commands, property set/get and messages to devices, over
// iot.command_dispatch.v1.Commands (command-dispatch, --commands-addr).
//
//   iotctl command send DEVICE --service meter --name reboot --paras '{"delay":5}'
//   iotctl command set-properties DEVICE --service meter --set relay_state=OFF
//   iotctl command message DEVICE --content '{"text":"hi"}' --ttl 60
//   iotctl command async DEVICE --service meter --name reboot --strategy delay
//   iotctl command list DEVICE --messages --status PENDING
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.h"
#include "client.h"
#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "output.h"

namespace iotctl {
namespace {

namespace pb = iot::command_dispatch::v1;

/// Where command-dispatch listens: its own option, as the global --addr is thing-model's.
struct Target {
  std::string addr = "127.0.0.1:50053";
};

/// A client of command-dispatch with the global options (key, timeout, --json).
Client DispatchClient(const Cli& cli, const Target& target) {
  GlobalOptions options = cli.options;
  options.addr = target.addr;
  return Client(options, ResolveApiKey(options));
}

/// JSON text from an option value or, with a leading '@', from a file ('@-': stdin).
std::string JsonArg(const std::string& value, const std::string& option) {
  std::string text = value.starts_with('@') ? ReadInput(value.substr(1)) : value;
  if (!text.empty() && nlohmann::json::parse(text, nullptr, false).is_discarded()) {
    throw Failure(kExitUsage, option + ": not valid JSON");
  }
  return text;
}

std::string Pretty(const std::string& json_text) {
  const auto value = nlohmann::json::parse(json_text, nullptr, false);
  return value.is_discarded() ? json_text : value.dump(2);
}

void PrintHistory(const google::protobuf::RepeatedPtrField<pb::StatusChange>& history) {
  if (history.empty()) {
    return;
  }
  Table table({"STATUS", "TIME", "DETAIL"});
  for (const auto& h : history) {
    table.AddRow({h.status(), ReadableTime(h.time()), OrDash(h.detail())});
  }
  std::cout << "\n";
  table.Print(std::cout);
}

void PrintCommand(Client& client, const pb::AsyncDeviceCommand& c) {
  if (client.json()) {
    PrintJson(c);
    return;
  }
  Fields fields;
  fields.Add("command", c.command_id())
      .Add("device", c.device_id())
      .Add("service", c.service_id())
      .Add("name", c.command_name())
      .Add("paras", OrDash(c.paras_json()))
      .Add("strategy", c.send_strategy())
      .Add("expire time", std::to_string(c.expire_time()) + " s")
      .Add("status", c.status())
      .Add("error", OrDash(c.error()))
      .Add("result", OrDash(c.result_json()))
      .Add("created", ReadableTime(c.created_time()))
      .Add("sent", ReadableTime(c.sent_time()))
      .Add("delivered", ReadableTime(c.delivered_time()))
      .Add("response", ReadableTime(c.response_time()));
  fields.Print(std::cout);
  PrintHistory(c.history());
}

void PrintMessage(Client& client, const pb::DeviceMessage& m) {
  if (client.json()) {
    PrintJson(m);
    return;
  }
  Fields fields;
  fields.Add("message", m.message_id())
      .Add("device", m.device_id())
      .Add("name", OrDash(m.name()))
      .Add("format", m.payload_format())
      .Add("content", m.payload_format() == "raw"
                          ? std::to_string(m.raw_message().size()) + " bytes"
                          : OrDash(m.message_json()))
      .Add("topic", OrDash(m.topic()))
      .Add("status", m.status())
      .Add("error", OrDash(m.error()))
      .Add("created", ReadableTime(m.created_time()))
      .Add("finished", ReadableTime(m.finished_time()));
  fields.Print(std::cout);
  PrintHistory(m.history());
}

/// A sync call's answer: its id and the device's response.
template <typename Response>
void PrintAnswer(Client& client, const Response& response, const std::string& id) {
  if (client.json()) {
    PrintJson(response);
    return;
  }
  std::cout << "request: " << id << "\n" << Pretty(response.response_json()) << "\n";
}

// ------------------------------------------------------------------------------ options

struct SendOptions {
  std::string device_id;
  std::string service_id;
  std::string command_name;
  std::string paras;
  int32_t timeout = 0;
  std::string strategy;
  int32_t expire = 0;
};

struct PropertiesOptions {
  std::string device_id;
  std::string service_id;
  std::vector<std::string> sets;
  std::string services;
  int32_t timeout = 0;
};

struct MessageOptions {
  std::string device_id;
  std::string message_id;
  std::string name;
  std::string content;
  std::string raw;
  std::string topic;
  int32_t ttl = 0;
};

struct ListOptions {
  std::string device_id;
  std::string id;
  bool messages = false;
  std::string status;
  int32_t limit = 0;
  std::string marker;
  bool all = false;
};

/// --set k=v pairs as {"services":[{"service_id","properties":{k: v}}]}; a value that parses as
/// JSON is taken as such (numbers, booleans), anything else as a string.
std::string ServicesJson(const PropertiesOptions& options) {
  if (!options.services.empty()) {
    if (!options.sets.empty()) {
      throw Failure(kExitUsage, "give --set or --services, not both");
    }
    return JsonArg(options.services, "--services");
  }
  if (options.service_id.empty() || options.sets.empty()) {
    throw Failure(kExitUsage, "give --service with --set NAME=VALUE, or --services JSON");
  }
  nlohmann::json properties = nlohmann::json::object();
  for (const std::string& set : options.sets) {
    const KeyValue kv = SplitKeyValue(set);
    auto value = nlohmann::json::parse(kv.value, nullptr, false);
    properties[kv.key] = value.is_discarded() ? nlohmann::json(kv.value) : value;
  }
  return nlohmann::json{
      {"services", {{{"service_id", options.service_id}, {"properties", properties}}}}}
      .dump();
}

// ------------------------------------------------------------------------------ actions

void Send(Client& client, const SendOptions& o) {
  pb::CreateCommandRequest request;
  request.set_device_id(o.device_id);
  request.set_service_id(o.service_id);
  request.set_command_name(o.command_name);
  request.set_paras_json(JsonArg(o.paras, "--paras"));
  request.set_timeout(o.timeout);
  auto stub = pb::Commands::NewStub(client.channel());
  const auto response = client.Call<pb::CreateCommandResponse>(
      [&](auto* context, auto* out) { return stub->CreateCommand(context, request, out); });
  PrintAnswer(client, response, response.command_id());
}

void Async(Client& client, const SendOptions& o) {
  pb::CreateAsyncCommandRequest request;
  request.set_device_id(o.device_id);
  request.set_service_id(o.service_id);
  request.set_command_name(o.command_name);
  request.set_paras_json(JsonArg(o.paras, "--paras"));
  request.set_send_strategy(o.strategy);
  request.set_expire_time(o.expire);
  auto stub = pb::Commands::NewStub(client.channel());
  PrintCommand(client, client.Call<pb::AsyncDeviceCommand>([&](auto* context, auto* out) {
    return stub->CreateAsyncCommand(context, request, out);
  }));
}

void SetProperties(Client& client, const PropertiesOptions& o) {
  pb::UpdatePropertiesRequest request;
  request.set_device_id(o.device_id);
  request.set_services_json(ServicesJson(o));
  request.set_timeout(o.timeout);
  auto stub = pb::Commands::NewStub(client.channel());
  const auto response = client.Call<pb::UpdatePropertiesResponse>(
      [&](auto* context, auto* out) { return stub->UpdateProperties(context, request, out); });
  PrintAnswer(client, response, response.request_id());
}

void GetProperties(Client& client, const PropertiesOptions& o) {
  pb::ListPropertiesRequest request;
  request.set_device_id(o.device_id);
  request.set_service_id(o.service_id);
  request.set_timeout(o.timeout);
  auto stub = pb::Commands::NewStub(client.channel());
  const auto response = client.Call<pb::ListPropertiesResponse>(
      [&](auto* context, auto* out) { return stub->ListProperties(context, request, out); });
  PrintAnswer(client, response, response.request_id());
}

void Message(Client& client, const MessageOptions& o) {
  if (o.content.empty() == o.raw.empty()) {
    throw Failure(kExitUsage, "give --content JSON or --raw TEXT");
  }
  pb::CreateMessageRequest request;
  request.set_device_id(o.device_id);
  request.set_message_id(o.message_id);
  request.set_name(o.name);
  if (o.raw.empty()) {
    request.set_message_json(JsonArg(o.content, "--content"));
  } else {
    request.set_payload_format("raw");
    request.set_raw_message(o.raw.starts_with('@') ? ReadInput(o.raw.substr(1)) : o.raw);
  }
  request.set_topic(o.topic);
  request.set_ttl(o.ttl);
  auto stub = pb::Commands::NewStub(client.channel());
  const auto response = client.Call<pb::CreateMessageResponse>(
      [&](auto* context, auto* out) { return stub->CreateMessage(context, request, out); });
  if (client.json()) {
    PrintJson(response);
    return;
  }
  PrintMessage(client, response.result());
}

void Show(Client& client, const ListOptions& o) {
  auto stub = pb::Commands::NewStub(client.channel());
  if (o.messages) {
    pb::ShowDeviceMessageRequest request;
    request.set_device_id(o.device_id);
    request.set_message_id(o.id);
    PrintMessage(client, client.Call<pb::DeviceMessage>([&](auto* context, auto* out) {
      return stub->ShowDeviceMessage(context, request, out);
    }));
    return;
  }
  pb::ShowAsyncDeviceCommandRequest request;
  request.set_device_id(o.device_id);
  request.set_command_id(o.id);
  PrintCommand(client, client.Call<pb::AsyncDeviceCommand>([&](auto* context, auto* out) {
    return stub->ShowAsyncDeviceCommand(context, request, out);
  }));
}

template <typename Request>
Request ListRequest(const ListOptions& o) {
  Request request;
  request.set_device_id(o.device_id);
  request.set_status(o.status);
  request.set_limit(o.limit);
  request.set_marker(o.marker);
  return request;
}

void List(Client& client, const ListOptions& o) {
  auto stub = pb::Commands::NewStub(client.channel());
  std::string next;
  if (o.messages) {
    const auto result = client.CallPages<pb::ListDeviceMessagesResponse>(
        ListRequest<pb::ListDeviceMessagesRequest>(o), o.all,
        [&](auto* c, const auto& r, auto* out) { return stub->ListDeviceMessages(c, r, out); });
    if (client.json()) {
      PrintJson(result);
      return;
    }
    Table table({"MESSAGE_ID", "NAME", "STATUS", "CREATED", "FINISHED"});
    for (const auto& m : result.messages()) {
      table.AddRow({m.message_id(), OrDash(m.name()), m.status(), ReadableTime(m.created_time()),
                    ReadableTime(m.finished_time())});
    }
    table.Print(std::cout);
    next = result.next_marker();
  } else {
    const auto result = client.CallPages<pb::ListAsyncDeviceCommandsResponse>(
        ListRequest<pb::ListAsyncDeviceCommandsRequest>(o), o.all,
        [&](auto* c, const auto& r, auto* out) {
          return stub->ListAsyncDeviceCommands(c, r, out);
        });
    if (client.json()) {
      PrintJson(result);
      return;
    }
    Table table({"COMMAND_ID", "SERVICE", "NAME", "STATUS", "CREATED", "RESPONSE"});
    for (const auto& c : result.commands()) {
      table.AddRow({c.command_id(), c.service_id(), c.command_name(), c.status(),
                    ReadableTime(c.created_time()), ReadableTime(c.response_time())});
    }
    table.Print(std::cout);
    next = result.next_marker();
  }
  if (!next.empty()) {
    std::cerr << "more: --all, or --marker " << next << "\n";
  }
}

// ------------------------------------------------------------------------------ registration

/// Registers a subcommand's action to run against command-dispatch rather than the global
/// --addr.
class DispatchRun {
 public:
  DispatchRun(Cli& cli, std::shared_ptr<Target> target) : cli_(&cli), target_(std::move(target)) {}

  template <typename Action>
  void operator()(CLI::App* command, Action action) const {
    OnRun(command, *cli_, [cli = cli_, target = target_, action](Client& /*thing_model*/) {
      Client client = DispatchClient(*cli, *target);
      action(client);
    });
  }

 private:
  Cli* cli_;
  std::shared_ptr<Target> target_;
};

void AddDeviceArg(CLI::App* command, std::string& device_id) {
  command->add_option("DEVICE_ID", device_id, "Device id")->required();
}

void AddCommandArgs(CLI::App* command, SendOptions& o) {
  AddDeviceArg(command, o.device_id);
  command->add_option("--service", o.service_id, "Service id of the model")->required();
  command->add_option("--name", o.command_name, "Command name of the model")->required();
  command->add_option("--paras", o.paras, "Paras as a JSON object (@FILE: from a file)");
}

/// command send, command async.
void AddSendCommands(CLI::App* group, const DispatchRun& on_run) {
  auto send = std::make_shared<SendOptions>();
  CLI::App* send_cmd = group->add_subcommand("send", "Send a command and wait for the answer");
  AddCommandArgs(send_cmd, *send);
  send_cmd->add_option("--wait", send->timeout, "Seconds to wait for the device, 1..60")
      ->check(CLI::Range(1, 60));
  on_run(send_cmd, [send](Client& client) { Send(client, *send); });

  auto async = std::make_shared<SendOptions>();
  CLI::App* async_cmd =
      group->add_subcommand("async", "Queue a command; `command show` follows its status");
  AddCommandArgs(async_cmd, *async);
  async_cmd
      ->add_option("--strategy", async->strategy,
                   "immediately (fails if offline) or delay (waits for the device)")
      ->check(CLI::IsMember({"immediately", "delay"}));
  async_cmd->add_option("--expire", async->expire, "Seconds a delayed command waits, 0..172800")
      ->check(CLI::Range(0, 172800));
  on_run(async_cmd, [async](Client& client) { Async(client, *async); });
}

/// command set-properties, command get-properties.
void AddPropertyCommands(CLI::App* group, const DispatchRun& on_run) {
  auto set = std::make_shared<PropertiesOptions>();
  CLI::App* set_cmd = group->add_subcommand("set-properties", "Set writable properties, wait");
  AddDeviceArg(set_cmd, set->device_id);
  set_cmd->add_option("--service", set->service_id, "Service id");
  set_cmd->add_option("--set", set->sets, "NAME=VALUE (repeatable; VALUE as JSON if it parses)")
      ->check(KeyValueValidator());
  set_cmd->add_option("--services", set->services,
                      R"({"services":[{"service_id","properties"}]} (@FILE: from a file))");
  set_cmd->add_option("--wait", set->timeout, "Seconds to wait, 1..60")->check(CLI::Range(1, 60));
  on_run(set_cmd, [set](Client& client) { SetProperties(client, *set); });

  auto get = std::make_shared<PropertiesOptions>();
  CLI::App* get_cmd = group->add_subcommand("get-properties", "Ask the device for properties");
  AddDeviceArg(get_cmd, get->device_id);
  get_cmd->add_option("--service", get->service_id, "Only this service");
  get_cmd->add_option("--wait", get->timeout, "Seconds to wait, 1..60")->check(CLI::Range(1, 60));
  on_run(get_cmd, [get](Client& client) { GetProperties(client, *get); });
}

void AddMessageCommand(CLI::App* group, const DispatchRun& on_run) {
  auto message = std::make_shared<MessageOptions>();
  CLI::App* message_cmd =
      group->add_subcommand("message", "Send a message; kept until the device connects (TTL)");
  AddDeviceArg(message_cmd, message->device_id);
  message_cmd->add_option("--content", message->content, "JSON content (@FILE: from a file)");
  message_cmd->add_option("--raw", message->raw, "Raw payload text (@FILE: bytes of a file)");
  message_cmd->add_option("--name", message->name, "Message name");
  message_cmd->add_option("--id", message->message_id, "Message id (generated when absent)");
  message_cmd->add_option("--topic", message->topic, "Custom topic below .../user/");
  message_cmd->add_option("--ttl", message->ttl, "Minutes to wait for the device (default 1440)")
      ->check(CLI::Range(1, 43200));
  on_run(message_cmd, [message](Client& client) { Message(client, *message); });
}

/// command show, command list.
void AddHistoryCommands(CLI::App* group, const DispatchRun& on_run) {
  auto show = std::make_shared<ListOptions>();
  CLI::App* show_cmd =
      group->add_subcommand("show", "An async command (or --message) with history");
  AddDeviceArg(show_cmd, show->device_id);
  show_cmd->add_option("ID", show->id, "Command id or message id")->required();
  show_cmd->add_flag("--message", show->messages, "ID is a message id");
  on_run(show_cmd, [show](Client& client) { Show(client, *show); });

  auto list = std::make_shared<ListOptions>();
  CLI::App* list_cmd = group->add_subcommand("list", "A device's async commands (or --messages)");
  AddDeviceArg(list_cmd, list->device_id);
  list_cmd->add_flag("--messages", list->messages, "List messages instead");
  list_cmd->add_option("--status", list->status, "Only this status, e.g. PENDING");
  list_cmd->add_option("--limit", list->limit, "Page size, 1..500 (server default 50)")
      ->check(CLI::Range(1, 500));
  list_cmd->add_option("--marker", list->marker, "Start after this page marker");
  list_cmd->add_flag("--all", list->all, "Follow the pages to the end");
  on_run(list_cmd, [list](Client& client) { List(client, *list); });
}

void AddCommandCommands(CLI::App& app, Cli& cli) {
  CLI::App* group = app.add_subcommand(
      "command", "Commands, property set/get and messages to devices (command-dispatch)");
  group->require_subcommand(1);
  group->fallthrough();
  auto target = std::make_shared<Target>();
  group->add_option("--commands-addr", target->addr, "command-dispatch gRPC address (host:port)")
      ->envname("IOTCTL_COMMANDS_ADDR")
      ->capture_default_str();
  const DispatchRun on_run(cli, target);
  AddSendCommands(group, on_run);
  AddPropertyCommands(group, on_run);
  AddMessageCommand(group, on_run);
  AddHistoryCommands(group, on_run);
}

}  // namespace

const GroupRegistration kCommandsRegistration(40, &AddCommandCommands);

}  // namespace iotctl
