#include "cli.h"

#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

namespace iotctl {

void OnRun(CLI::App* command, Cli& cli, Action action) {
  command->callback([&cli, action = std::move(action)] { cli.action = action; });
}

namespace {

std::multimap<int, GroupAdder>& Registry() {
  static std::multimap<int, GroupAdder> groups;
  return groups;
}

}  // namespace

GroupRegistration::GroupRegistration(int order, GroupAdder add) { Registry().emplace(order, add); }

const std::multimap<int, GroupAdder>& GroupRegistration::All() { return Registry(); }

std::string ReadInput(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Failure(kExitUsage, "cannot read " + path);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    throw Failure(kExitUsage, "cannot read " + path);
  }
  return ss.str();
}

KeyValue SplitKeyValue(const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos) {
    return KeyValue{.key = text, .value = {}, .has_value = false};
  }
  return KeyValue{.key = text.substr(0, eq), .value = text.substr(eq + 1), .has_value = true};
}

const CLI::Validator& KeyValueValidator() {
  static const CLI::Validator validator(
      [](std::string& text) -> std::string {
        const KeyValue kv = SplitKeyValue(text);
        if (!kv.has_value || kv.key.empty()) {
          return "expected KEY=VALUE, got '" + text + "'";
        }
        return {};
      },
      "KEY=VALUE");
  return validator;
}

}  // namespace iotctl
