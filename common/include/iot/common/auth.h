#pragma once

#include <grpcpp/server_context.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "iot/common/status.h"

namespace iot::common {

class RedisClient;

/// Roles of API keys (thing-model's Role enum uses the same numbers).
enum class Role { kReader = 1, kOperator = 2, kAdmin = 3, kService = 4 };

/// What a call may do. kRead: any role; kWrite: operator, admin or service; kAdmin: admin;
/// kInternal: service only (calls between the platform's services).
enum class Access { kRead, kWrite, kAdmin, kInternal };

/// The authenticated caller. A service key is not bound to a tenant (`tenant_id` empty):
/// internal calls name the tenant or device they act on.
struct Principal {
  std::string tenant_id;
  Role role = Role::kReader;
  std::string key_id;
  bool root_tenant = false;  ///< the bootstrap tenant, which may create tenants
};

std::string_view RoleName(Role role);
absl::StatusOr<Role> ParseRole(std::string_view name);
bool Allows(Role role, Access access);

/// The key hash stored and looked up everywhere: hex SHA-256 of the key text.
std::string HashApiKey(std::string_view key);

/// Port: resolves a key hash to its principal; NOT_FOUND for an unknown or revoked key,
/// UNAVAILABLE when the store cannot be reached.
class KeyResolver {
 public:
  virtual ~KeyResolver() = default;
  virtual absl::StatusOr<Principal> Resolve(const std::string& key_hash) = 0;
};

/// Reads the key projection thing-model keeps in Redis: HASH `tm:key:{hash}` with fields
/// tenant_id, role, key_id, root (docs/redis-projection.md).
class RedisKeyResolver final : public KeyResolver {
 public:
  explicit RedisKeyResolver(std::shared_ptr<RedisClient> redis) : redis_(std::move(redis)) {}
  absl::StatusOr<Principal> Resolve(const std::string& key_hash) override;

 private:
  std::shared_ptr<RedisClient> redis_;
};

/// Authenticates gRPC calls from `authorization: Bearer <key>` metadata, caching resolved keys
/// for `ttl` (revocation reaches every replica within ttl + the store's own delay; keep it
/// under a second). Thread-safe. Used by every service's handlers:
///
///   auto caller = auth.Authorize(*context, Access::kWrite);
///   if (!caller.ok()) return ToGrpcStatus(caller.status());
class Authenticator {
 public:
  explicit Authenticator(std::shared_ptr<KeyResolver> resolver,
                         std::chrono::milliseconds ttl = std::chrono::milliseconds(500));

  /// UNAUTHENTICATED for a missing, malformed, unknown or revoked key; PERMISSION_DENIED when
  /// the key's role does not allow `access`; UNAVAILABLE when keys cannot be checked.
  absl::StatusOr<Principal> Authorize(const grpc::ServerContext& context, Access access);
  /// The same, for a key given directly.
  absl::StatusOr<Principal> AuthorizeKey(std::string_view key, Access access);

 private:
  struct Entry {
    absl::StatusOr<Principal> principal;
    std::chrono::steady_clock::time_point expires;
  };

  std::shared_ptr<KeyResolver> resolver_;
  std::chrono::milliseconds ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> cache_;
};

/// `authorization: Bearer <key>` for client calls (services calling services, tools).
void SetBearer(grpc::ClientContext& context, const std::string& key);

}  // namespace iot::common

/// In a gRPC handler method of a class with an `Authenticator` pointer member `auth_` and the
/// method's `grpc::ServerContext* context` parameter: authorizes the call for `access` and
/// binds the caller to `const Principal& principal`, or returns the error as a grpc::Status.
/// (`principal` is the name of the variable it declares: it cannot be parenthesized.)
// NOLINTBEGIN(bugprone-macro-parentheses)
#define IOT_AUTHORIZE(principal, access)                         \
  auto principal##_or = auth_->Authorize(*context, (access));    \
  if (!principal##_or.ok()) {                                    \
    return ::iot::common::ToGrpcStatus(principal##_or.status()); \
  }                                                              \
  [[maybe_unused]] const ::iot::common::Principal& principal = *principal##_or
// NOLINTEND(bugprone-macro-parentheses)
