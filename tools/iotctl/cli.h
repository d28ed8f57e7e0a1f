#pragma once

// The skeleton every iotctl command group plugs into: global options, exit codes, the action a
// leaf command chooses, and the registry of resource groups.

#include <CLI/CLI.hpp>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

namespace iotctl {

class Client;

/// Exit codes of iotctl.
enum ExitCode : int {
  kExitOk = 0,
  kExitServerError = 1,  ///< the server answered with an error
  kExitUsage = 2,        ///< bad command line, missing API key, unreadable input file
  kExitUnavailable = 3,  ///< the server could not be reached or is unavailable
};

/// Ends the command with `code`. `message` (if any) is printed as `error: <message>`; an empty
/// message means the error was already printed (Client does so for failed calls).
class Failure : public std::runtime_error {
 public:
  Failure(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  [[nodiscard]] int code() const { return code_; }

 private:
  int code_;
};

/// Options of every command.
struct GlobalOptions {
  std::string addr = "127.0.0.1:50052";
  std::string api_key;
  std::string api_key_file;
  double timeout_seconds = 10;
  bool json = false;
};

/// What the chosen leaf command does once the command line is parsed and a client exists.
using Action = std::function<void(Client&)>;

/// State shared by all command groups while the command line is parsed.
struct Cli {
  GlobalOptions options;
  Action action;
};

/// Makes `command` choose `action` when it appears on the command line. The action's options
/// must outlive the parse: bind them to fields of a std::shared_ptr the action captures.
void OnRun(CLI::App* command, Cli& cli, Action action);

/// Adds a resource group's commands (subcommands of `app`).
using GroupAdder = void (*)(CLI::App& app, Cli& cli);

/// A resource group registers itself with one line at namespace scope of its own file:
///
///   const iotctl::GroupRegistration kRegistration(30, &AddDeviceCommands);
///
/// Groups appear in `--help` by `order`.
class GroupRegistration {
 public:
  GroupRegistration(int order, GroupAdder add);
  /// Every registered group's adder, by order.
  static const std::multimap<int, GroupAdder>& All();
};

// Helpers for the command groups' option parsing.

/// Reads a JSON input file, `-` meaning stdin. Failure(kExitUsage) when it cannot be read.
std::string ReadInput(const std::string& path);

/// Splits `k=v` into key and value (value empty and `has_value` false for a bare `k`).
struct KeyValue {
  std::string key;
  std::string value;
  bool has_value = false;
};
KeyValue SplitKeyValue(const std::string& text);

/// CLI11 check: `k=v` with a non-empty key.
const CLI::Validator& KeyValueValidator();

}  // namespace iotctl
