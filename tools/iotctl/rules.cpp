// Command `rule`: forwarding rules and their dead letters, over iot.rule_forwarding.v1.Rules.
// rule-forwarding listens on its own port: `iotctl --addr 127.0.0.1:50055 rule ...` (or
// IOTCTL_ADDR).
#include <google/protobuf/util/json_util.h>

#include <iostream>
#include <memory>
#include <string>

#include "cli.h"
#include "client.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "output.h"

namespace iotctl {
namespace {

namespace pb = iot::rule_forwarding::v1;

/// A request message from a JSON file (proto field names, e.g. `config_json` of actions).
template <typename Message>
Message FromJsonFile(const std::string& path) {
  Message message;
  const auto status = google::protobuf::util::JsonStringToMessage(ReadInput(path), &message);
  if (!status.ok()) {
    throw Failure(kExitUsage, path + ": " + std::string(status.message()));
  }
  return message;
}

void PrintRule(Client& client, const pb::Rule& rule) {
  if (client.json()) {
    PrintJson(rule);
    return;
  }
  Fields fields;
  fields.Add("rule", rule.rule_id())
      .Add("name", rule.name())
      .Add("status", rule.status())
      .Add("resource", rule.resource())
      .Add("product", OrDash(rule.product_id()))
      .Add("device", OrDash(rule.device_id()))
      .Add("sql", rule.sql())
      .Add("description", OrDash(rule.description()))
      .Add("created", ReadableTime(rule.create_time()))
      .Add("updated", ReadableTime(rule.update_time()));
  fields.Print(std::cout);
  std::cout << "\n";
  Table actions({"#", "TYPE", "CONFIG"});
  for (int i = 0; i < rule.actions_size(); ++i) {
    actions.AddRow({std::to_string(i), rule.actions(i).type(), rule.actions(i).config_json()});
  }
  actions.Print(std::cout);
}

std::unique_ptr<pb::Rules::Stub> Stub(Client& client) {
  return pb::Rules::NewStub(client.channel());
}

void RuleCreate(Client& client, const std::string& file) {
  const auto request = FromJsonFile<pb::CreateRuleRequest>(file);
  auto stub = Stub(client);
  PrintRule(client, client.Call<pb::Rule>([&](auto* context, auto* out) {
    return stub->CreateRule(context, request, out);
  }));
}

struct UpdateOptions {
  std::string rule_id;
  std::string file;
};

void RuleUpdate(Client& client, const UpdateOptions& options) {
  auto request = FromJsonFile<pb::UpdateRuleRequest>(options.file);
  request.set_rule_id(options.rule_id);
  auto stub = Stub(client);
  PrintRule(client, client.Call<pb::Rule>([&](auto* context, auto* out) {
    return stub->UpdateRule(context, request, out);
  }));
}

void RuleShow(Client& client, const std::string& rule_id) {
  pb::ShowRuleRequest request;
  request.set_rule_id(rule_id);
  auto stub = Stub(client);
  PrintRule(client, client.Call<pb::Rule>([&](auto* context, auto* out) {
    return stub->ShowRule(context, request, out);
  }));
}

void RuleStatus(Client& client, const std::string& rule_id, const std::string& status) {
  pb::ChangeRuleStatusRequest request;
  request.set_rule_id(rule_id);
  request.set_status(status);
  auto stub = Stub(client);
  PrintRule(client, client.Call<pb::Rule>([&](auto* context, auto* out) {
    return stub->ChangeRuleStatus(context, request, out);
  }));
}

void RuleDelete(Client& client, const std::string& rule_id) {
  pb::DeleteRuleRequest request;
  request.set_rule_id(rule_id);
  auto stub = Stub(client);
  const auto response = client.Call<pb::DeleteRuleResponse>(
      [&](auto* context, auto* out) { return stub->DeleteRule(context, request, out); });
  if (client.json()) {
    PrintJson(response);
    return;
  }
  std::cout << "deleted rule " << rule_id << "\n";
}

struct ListOptions {
  std::string filter;  // resource (rules) or rule id (dead letters)
  int32_t limit = 0;
  std::string marker;
  bool all = false;
};

void RuleList(Client& client, const ListOptions& options) {
  pb::ListRulesRequest request;
  request.set_resource(options.filter);
  request.set_limit(options.limit);
  request.set_marker(options.marker);
  auto stub = Stub(client);
  const auto result = client.CallPages<pb::ListRulesResponse>(
      request, options.all,
      [&](auto* context, const auto& r, auto* out) { return stub->ListRules(context, r, out); });
  if (client.json()) {
    PrintJson(result);
    return;
  }
  if (result.rules().empty()) {
    std::cerr << "no rules\n";
  } else {
    Table table({"RULE_ID", "NAME", "STATUS", "RESOURCE", "ACTIONS", "UPDATED"});
    for (const auto& r : result.rules()) {
      std::string types;
      for (const auto& a : r.actions()) {
        types += (types.empty() ? "" : ",") + a.type();
      }
      table.AddRow(
          {r.rule_id(), r.name(), r.status(), r.resource(), types, ReadableTime(r.update_time())});
    }
    table.Print(std::cout);
  }
  if (!result.next_marker().empty()) {
    std::cerr << "more rules: --all, or --marker " << result.next_marker() << "\n";
  }
}

void DeadLetterList(Client& client, const ListOptions& options) {
  pb::ListDeadLettersRequest request;
  request.set_rule_id(options.filter);
  request.set_limit(options.limit);
  request.set_marker(options.marker);
  auto stub = Stub(client);
  const auto result = client.CallPages<pb::ListDeadLettersResponse>(
      request, options.all, [&](auto* context, const auto& r, auto* out) {
        return stub->ListDeadLetters(context, r, out);
      });
  if (client.json()) {
    PrintJson(result);
    return;
  }
  if (result.dead_letters().empty()) {
    std::cerr << "no dead letters\n";
  } else {
    Table table({"ID", "RULE_ID", "TYPE", "DEVICE", "ATTEMPTS", "ERROR", "CREATED"});
    for (const auto& d : result.dead_letters()) {
      table.AddRow({d.dead_letter_id(), d.rule_id(), d.action_type(), d.device_id(),
                    std::to_string(d.attempts()), d.error(), ReadableTime(d.create_time())});
    }
    table.Print(std::cout);
  }
  if (!result.next_marker().empty()) {
    std::cerr << "more dead letters: --all, or --marker " << result.next_marker() << "\n";
  }
}

// ------------------------------------------------------------------------------ registration

void AddListOptions(CLI::App* command, ListOptions& options) {
  command->add_option("--limit", options.limit, "Page size, 1..500 (server default 50)")
      ->check(CLI::Range(1, 500));
  command->add_option("--marker", options.marker, "Start after this page marker");
  command->add_flag("--all", options.all, "Follow the pages to the end");
}

void AddRuleCommands(CLI::App& app, Cli& cli) {
  CLI::App* rule = app.add_subcommand(
      "rule", "Forwarding rules and dead letters (rule-forwarding: --addr host:50055)");
  rule->require_subcommand(1);

  auto create_file = std::make_shared<std::string>();
  CLI::App* create = rule->add_subcommand("create", "Create a rule from CreateRuleRequest JSON");
  create->add_option("-f,--file", *create_file, "The rule as JSON (- for stdin); docs/rules.md")
      ->required();
  OnRun(create, cli, [create_file](Client& client) { RuleCreate(client, *create_file); });

  auto update_options = std::make_shared<UpdateOptions>();
  CLI::App* update = rule->add_subcommand("update", "Replace a rule's definition");
  update->add_option("RULE_ID", update_options->rule_id, "Rule id")->required();
  update->add_option("-f,--file", update_options->file, "The whole rule as JSON (- for stdin)")
      ->required();
  OnRun(update, cli, [update_options](Client& client) { RuleUpdate(client, *update_options); });

  auto rule_id = std::make_shared<std::string>();
  CLI::App* show = rule->add_subcommand("show", "Show a rule");
  show->add_option("RULE_ID", *rule_id, "Rule id")->required();
  OnRun(show, cli, [rule_id](Client& client) { RuleShow(client, *rule_id); });

  for (const char* status : {"active", "inactive"}) {
    const std::string name = std::string(status) == "active" ? "enable" : "disable";
    CLI::App* change =
        rule->add_subcommand(name, name == "enable" ? "Activate a rule" : "Deactivate a rule");
    change->add_option("RULE_ID", *rule_id, "Rule id")->required();
    OnRun(change, cli, [rule_id, status](Client& client) { RuleStatus(client, *rule_id, status); });
  }

  CLI::App* del = rule->add_subcommand("delete", "Delete a rule");
  del->add_option("RULE_ID", *rule_id, "Rule id")->required();
  OnRun(del, cli, [rule_id](Client& client) { RuleDelete(client, *rule_id); });

  auto list_options = std::make_shared<ListOptions>();
  CLI::App* list = rule->add_subcommand("list", "List rules");
  list->add_option("--resource", list_options->filter, "Only rules of this resource");
  AddListOptions(list, *list_options);
  OnRun(list, cli, [list_options](Client& client) { RuleList(client, *list_options); });

  auto dead_options = std::make_shared<ListOptions>();
  CLI::App* dead = rule->add_subcommand("dead-letters", "List deliveries given up");
  dead->add_option("--rule", dead_options->filter, "Only this rule's");
  AddListOptions(dead, *dead_options);
  OnRun(dead, cli, [dead_options](Client& client) { DeadLetterList(client, *dead_options); });
}

}  // namespace

const GroupRegistration kRulesRegistration(50, &AddRuleCommands);

}  // namespace iotctl
