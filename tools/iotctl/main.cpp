// iotctl: the platform's command-line client over its gRPC APIs (tenants, API keys, products,
// devices). Each resource group lives in its own file and registers itself (cli.h).
//
//   export IOTCTL_API_KEY=...          # never printed; --api-key-file for a key in a file
//   iotctl product create --file huawei_product.json
//   iotctl device add --product smartmeter01 --node meter-1
//   iotctl --json device list --all
//
// Exit codes: 0 ok, 1 the server answered with an error, 2 usage error, 3 server unreachable.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <utility>

#include "cli.h"
#include "client.h"

namespace {

/// The service behind each command group that is not thing-model's: without --addr /
/// IOTCTL_ADDR, a command talks to that service at IOTCTL_<SERVICE>_ADDR or its standard port.
/// (`command` has its own --commands-addr.)
void ApplyServiceAddress(const CLI::App& app, iotctl::GlobalOptions& options) {
  static const std::map<std::string, std::pair<const char*, const char*>> kServices = {
      {"shadow", {"IOTCTL_SHADOW_ADDR", "127.0.0.1:50054"}},
      {"rule", {"IOTCTL_RULE_FORWARDING_ADDR", "127.0.0.1:50055"}},
      {"group", {"IOTCTL_RULE_FORWARDING_ADDR", "127.0.0.1:50055"}},
      {"subscribe", {"IOTCTL_RULE_FORWARDING_ADDR", "127.0.0.1:50055"}},
      {"history", {"IOTCTL_RULE_FORWARDING_ADDR", "127.0.0.1:50055"}}};
  const char* global = std::getenv("IOTCTL_ADDR");
  if (app.get_option("--addr")->count() > 0 || (global != nullptr && *global != '\0')) {
    return;  // the caller chose
  }
  for (const CLI::App* command : app.get_subcommands()) {
    auto it = kServices.find(command->get_name());
    if (it != kServices.end()) {
      const char* env = std::getenv(it->second.first);
      options.addr = env != nullptr && *env != '\0' ? env : it->second.second;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  using iotctl::kExitUsage;
  CLI::App app{"iotctl: manage the IoT platform's tenants, API keys, products and devices"};
  app.footer(
      "The API key comes from --api-key, --api-key-file, IOTCTL_API_KEY or IOTCTL_API_KEY_FILE.\n"
      "Exit codes: 0 ok, 1 server error, 2 usage error, 3 server unreachable or unavailable.");
  app.set_help_all_flag("--help-all", "Print help of every command and exit");
  app.failure_message([](const CLI::App* /*app*/, const CLI::Error& e) {
    return "error: " + std::string(e.what()) + "\nRun with --help for the usage.\n";
  });
  app.fallthrough();  // global options may follow the command: `iotctl device list --json`
  app.require_subcommand(1);

  iotctl::Cli cli;
  iotctl::GlobalOptions& options = cli.options;
  app.add_option("--addr", options.addr,
                 "gRPC address (host:port) of the service the command talks to; default: "
                 "thing-model, or for shadow / rule / group / subscribe / history commands "
                 "IOTCTL_SHADOW_ADDR / IOTCTL_RULE_FORWARDING_ADDR or their standard ports "
                 "(50054, 50055)")
      ->envname("IOTCTL_ADDR")
      ->capture_default_str();
  auto* key = app.add_option("--api-key", options.api_key,
                             "API key (prefer IOTCTL_API_KEY: command lines are visible to "
                             "other users)");
  app.add_option("--api-key-file", options.api_key_file, "File holding the API key")->excludes(key);
  app.add_option("--timeout", options.timeout_seconds, "Deadline of each call, in seconds")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            double value = 0;
            return CLI::detail::lexical_cast(text, value) && value > 0 ? std::string()
                                                                       : "must be > 0 seconds";
          },
          "SECONDS"))
      ->capture_default_str();
  app.add_flag("--json", options.json,
               "Print the response as JSON (proto field names) instead of a table");

  for (const auto& [order, add] : iotctl::GroupRegistration::All()) {
    add(app, cli);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  ApplyServiceAddress(app, options);
  if (!cli.action) {
    std::cerr << app.help();
    return kExitUsage;
  }
  try {
    iotctl::Client client(options, iotctl::ResolveApiKey(options));
    cli.action(client);
  } catch (const iotctl::Failure& failure) {
    if (*failure.what() != '\0') {
      std::cerr << "error: " << failure.what() << "\n";
    }
    return failure.code();
  }
  return 0;
}
