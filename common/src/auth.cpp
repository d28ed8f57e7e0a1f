#include "iot/common/auth.h"

#include <grpcpp/client_context.h>

#include "iot/common/crypto.h"
#include "iot/common/redis.h"

namespace iot::common {
namespace {

constexpr size_t kMaxCacheEntries = 10'000;

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kReader:
      return "reader";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
    case Role::kService:
      return "service";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(std::string_view name) {
  for (const Role role : {Role::kReader, Role::kOperator, Role::kAdmin, Role::kService}) {
    if (RoleName(role) == name) {
      return role;
    }
  }
  return absl::InvalidArgumentError("role: '" + std::string(name) +
                                    "' is not one of reader, operator, admin, service");
}

bool Allows(Role role, Access access) {
  switch (access) {
    case Access::kRead:
      return true;
    case Access::kWrite:
      return role == Role::kOperator || role == Role::kAdmin || role == Role::kService;
    case Access::kAdmin:
      return role == Role::kAdmin;
    case Access::kInternal:
      return role == Role::kService;
  }
  return false;
}

std::string HashApiKey(std::string_view key) { return Sha256Hex(key); }

absl::StatusOr<Principal> RedisKeyResolver::Resolve(const std::string& key_hash) {
  auto reply = redis_->Command({"HGETALL", "tm:key:" + key_hash});
  if (!reply.ok()) {
    return reply.status();
  }
  if (reply->is_error()) {
    return absl::UnavailableError("key store: " + reply->str);
  }
  if (reply->elements.empty()) {
    return absl::NotFoundError("unknown API key");
  }
  Principal principal;
  std::string role;
  for (size_t i = 0; i + 1 < reply->elements.size(); i += 2) {
    const std::string& field = reply->elements[i].str;
    const std::string& value = reply->elements[i + 1].str;
    if (field == "tenant_id") {
      principal.tenant_id = value;
    } else if (field == "role") {
      role = value;
    } else if (field == "key_id") {
      principal.key_id = value;
    } else if (field == "root") {
      principal.root_tenant = value == "1";
    }
  }
  auto parsed = ParseRole(role);
  if (!parsed.ok()) {
    return absl::NotFoundError("API key with an unknown role");
  }
  principal.role = *parsed;
  return principal;
}

Authenticator::Authenticator(std::shared_ptr<KeyResolver> resolver, std::chrono::milliseconds ttl)
    : resolver_(std::move(resolver)), ttl_(ttl) {}

absl::StatusOr<Principal> Authenticator::Authorize(const grpc::ServerContext& context,
                                                   Access access) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <api key>' metadata");
  }
  const std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kBearer = "Bearer ";
  if (value.substr(0, kBearer.size()) != kBearer || value.size() == kBearer.size()) {
    return absl::UnauthenticatedError("authorization metadata is not 'Bearer <api key>'");
  }
  return AuthorizeKey(value.substr(kBearer.size()), access);
}

absl::StatusOr<Principal> Authenticator::AuthorizeKey(std::string_view key, Access access) {
  const std::string hash = HashApiKey(key);
  const auto now = std::chrono::steady_clock::now();
  absl::StatusOr<Principal> principal = absl::UnknownError("unresolved");
  bool cached = false;
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(hash); it != cache_.end() && it->second.expires > now) {
      principal = it->second.principal;
      cached = true;
    }
  }
  if (!cached) {
    principal = resolver_->Resolve(hash);
    // Outages are not cached: the next call tries again.
    if (principal.ok() || principal.status().code() == absl::StatusCode::kNotFound) {
      std::lock_guard lock(mu_);
      if (cache_.size() >= kMaxCacheEntries) {
        cache_.clear();
      }
      cache_[hash] = Entry{principal, now + ttl_};
    }
  }
  if (!principal.ok()) {
    if (principal.status().code() == absl::StatusCode::kNotFound) {
      return absl::UnauthenticatedError("unknown or revoked API key");
    }
    return absl::UnavailableError("cannot check the API key: " +
                                  std::string(principal.status().message()));
  }
  if (!Allows(principal->role, access)) {
    return absl::PermissionDeniedError("role '" + std::string(RoleName(principal->role)) +
                                       "' may not do this");
  }
  return principal;
}

void SetBearer(grpc::ClientContext& context, const std::string& key) {
  context.AddMetadata("authorization", "Bearer " + key);
}

}  // namespace iot::common
