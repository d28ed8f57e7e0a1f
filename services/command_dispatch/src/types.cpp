#include "iot/command_dispatch/types.h"

#include <algorithm>
#include <array>

#include "iot/common/status.h"

namespace iot::command_dispatch {
namespace {

constexpr std::array<std::pair<Kind, std::string_view>, 5> kKinds = {{
    {Kind::kCommand, "command"},
    {Kind::kPropertiesSet, "properties_set"},
    {Kind::kPropertiesGet, "properties_get"},
    {Kind::kMessage, "message"},
    {Kind::kAsyncCommand, "async_command"},
}};

}  // namespace

std::string_view KindName(Kind kind) {
  for (const auto& [k, name] : kKinds) {
    if (k == kind) {
      return name;
    }
  }
  return "unknown";
}

absl::StatusOr<Kind> ParseKind(std::string_view name) {
  for (const auto& [k, n] : kKinds) {
    if (n == name) {
      return k;
    }
  }
  return absl::InvalidArgumentError("unknown request kind '" + std::string(name) + "'");
}

bool IsSync(Kind kind) {
  return kind == Kind::kCommand || kind == Kind::kPropertiesSet || kind == Kind::kPropertiesGet;
}

bool IsStatusOf(Kind kind, std::string_view s) {
  using namespace status;
  std::vector<std::string_view> allowed;
  switch (kind) {
    case Kind::kMessage:
      allowed = {kPending, kDelivered, kFailed, kTimeout};
      break;
    case Kind::kAsyncCommand:
      allowed = {kPending, kExpired, kSent, kDelivered, kSuccessful, kFailed, kTimeout};
      break;
    default:
      allowed = {kSent, kSuccessful, kFailed, kTimeout};
      break;
  }
  return std::find(allowed.begin(), allowed.end(), s) != allowed.end();
}

}  // namespace iot::command_dispatch
