// Command `history`: a device property's stored values, raw or bucketed, over
// iot.rule_forwarding.v1.History (rule-forwarding: `iotctl --addr 127.0.0.1:50055 history ...`).
#include <fmt/format.h>

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

struct HistoryOptions {
  pb::ListPropertyHistoryRequest request;
  bool all = false;
};

void History(Client& client, const HistoryOptions& options) {
  auto stub = pb::History::NewStub(client.channel());
  const auto result = client.CallPages<pb::ListPropertyHistoryResponse>(
      options.request, options.all, [&](auto* context, const auto& r, auto* out) {
        return stub->ListPropertyHistory(context, r, out);
      });
  if (client.json()) {
    PrintJson(result);
    return;
  }
  if (options.request.bucket().empty()) {
    Table table({"TIME", "VALUE"});
    for (const auto& v : result.values()) {
      table.AddRow({v.time(), v.value_json()});
    }
    table.Print(std::cout);
  } else {
    Table table({"BUCKET", "COUNT", "MIN", "MAX", "AVG"});
    auto number = [](bool has, double value) {
      return has ? fmt::format("{:g}", value) : std::string("-");
    };
    for (const auto& b : result.buckets()) {
      table.AddRow({b.start_time(), std::to_string(b.count()), number(b.has_min(), b.min()),
                    number(b.has_max(), b.max()), number(b.has_avg(), b.avg())});
    }
    table.Print(std::cout);
  }
  if (!result.next_marker().empty()) {
    std::cerr << "more: --all, or --marker " << result.next_marker() << "\n";
  }
}

void AddHistoryCommands(CLI::App& app, Cli& cli) {
  auto options = std::make_shared<HistoryOptions>();
  pb::ListPropertyHistoryRequest& r = options->request;
  CLI::App* history = app.add_subcommand(
      "history", "A device property's stored values (rule-forwarding: --addr host:50055)");
  history
      ->add_option_function<std::string>(
          "--device", [&r](const std::string& v) { r.set_device_id(v); }, "Device id")
      ->required();
  history
      ->add_option_function<std::string>(
          "--service", [&r](const std::string& v) { r.set_service_id(v); }, "Service id")
      ->required();
  history
      ->add_option_function<std::string>(
          "--property", [&r](const std::string& v) { r.set_property(v); }, "Property name")
      ->required();
  history->add_option_function<std::string>(
      "--start", [&r](const std::string& v) { r.set_start_time(v); },
      "From (RFC 3339 or yyyyMMddTHHmmssZ; default: end - 1 day)");
  history->add_option_function<std::string>(
      "--end", [&r](const std::string& v) { r.set_end_time(v); },
      "Until, exclusive (default: now)");
  history->add_option_function<std::string>(
      "--bucket", [&r](const std::string& v) { r.set_bucket(v); },
      "Aggregate per bucket: 30s, 5m, 1h, 1d (count, min, max, avg)");
  history
      ->add_option_function<int32_t>(
          "--limit", [&r](const int32_t& v) { r.set_limit(v); }, "Page size, 1..1000 (default 100)")
      ->check(CLI::Range(1, 1000));
  history->add_option_function<std::string>(
      "--marker", [&r](const std::string& v) { r.set_marker(v); }, "Continue from this marker");
  history->add_flag("--all", options->all, "Follow the pages to the end");
  OnRun(history, cli, [options](Client& client) { History(client, *options); });
}

}  // namespace

const GroupRegistration kHistoryRegistration(60, &AddHistoryCommands);

}  // namespace iotctl
