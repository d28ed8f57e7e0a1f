#include "iot/thing_model/thing_model_service.h"

#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>

#include "iot/common/logging.h"
#include "iot/common/status.h"

namespace iot::thing_model {
namespace {

using common::Access;
using common::InvalidField;
using common::Principal;
using common::Role;

constexpr int32_t kMaxLimit = 500;
constexpr int32_t kDefaultLimit = 50;

bool MatchesCharset(std::string_view s, std::string_view extra, bool allow_upper) {
  for (const char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    (allow_upper && c >= 'A' && c <= 'Z') ||
                    extra.find(c) != std::string_view::npos;
    if (!ok) {
      return false;
    }
  }
  return true;
}

absl::Status CheckId(std::string_view field, std::string_view value, size_t max_len,
                     bool allow_upper, std::string_view extra = "_-") {
  if (value.empty() || value.size() > max_len || !MatchesCharset(value, extra, allow_upper)) {
    std::string allowed;
    for (const char c : extra) {
      allowed += fmt::format(", '{}'", c);
    }
    allowed.replace(allowed.rfind(','), 1, " and");
    return InvalidField(field, fmt::format("must be 1..{} characters of {}{}", max_len,
                                           allow_upper ? "A-Z, a-z, 0-9" : "a-z, 0-9", allowed));
  }
  return absl::OkStatus();
}

/// An Alibaba deviceName is a node id that may also hold '@', '.' and ':' (Alibaba allows
/// [A-Za-z0-9_-@.:]{4,32}; the registry accepts 1..64 of them).
constexpr std::string_view kAlinkIdExtra = "_-@.:";

/// `a1` and 9 characters of [A-Za-z0-9], the form of Alibaba's product keys.
std::string NewProductKey() {
  constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string key = "a1";
  for (const char byte : common::RandomBytes(9)) {
    key += kAlphabet[static_cast<unsigned char>(byte) % kAlphabet.size()];
  }
  return key;
}

/// A product comes from exactly one of a Huawei product model and an Alibaba TSL.
absl::Status CheckOneModel(const std::string& product_json, const std::string& tsl_json) {
  if (!product_json.empty() && !tsl_json.empty()) {
    return InvalidField("tsl_json",
                        "product_json and tsl_json exclude each other: give one of them");
  }
  return absl::OkStatus();
}

/// Writes to a tenant's resources: operators and admins of that tenant. Service keys have no
/// tenant and act only through the internal API.
absl::Status CheckTenantWrite(const Principal& caller, std::string_view what) {
  if (!common::Allows(caller.role, Access::kWrite) || caller.role == Role::kService) {
    return absl::PermissionDeniedError(fmt::format("role may not {}", what));
  }
  return absl::OkStatus();
}

absl::StatusOr<PageRequest> CheckPage(PageRequest page) {
  if (page.limit == 0) {
    page.limit = kDefaultLimit;
  }
  if (page.limit < 1 || page.limit > kMaxLimit) {
    return InvalidField("limit", fmt::format("must be between 1 and {}", kMaxLimit));
  }
  return page;
}

std::string NewKeySecret() { return "iot_" + common::Base64UrlEncode(common::RandomBytes(32)); }

nlohmann::json DeviceChange(const DeviceRecord& device, std::string_view op) {
  return {{"kind", "device"},
          {"op", op},
          {"device_id", device.device_id},
          {"tenant_id", device.tenant_id},
          {"product_id", device.product_id},
          {"frozen", device.frozen}};
}

}  // namespace

std::string NowRfc3339() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - secs).count();
  const std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

ThingModelService::ThingModelService(std::shared_ptr<Registry> registry,
                                     std::shared_ptr<Projection> projection,
                                     common::SecretBox secrets, ThingModelOptions options)
    : registry_(std::move(registry)),
      projection_(std::move(projection)),
      secrets_(std::move(secrets)),
      options_(std::move(options)) {}

absl::Status ThingModelService::Bootstrap() {
  if (!options_.bootstrap_admin_key.empty()) {
    TenantRecord tenant{.tenant_id = options_.bootstrap_tenant,
                        .name = options_.bootstrap_tenant,
                        .root = true,
                        .create_time = {}};
    ApiKeyRecord key{.key_id = "k_bootstrap_admin",
                     .tenant_id = tenant.tenant_id,
                     .name = "bootstrap admin",
                     .role = Role::kAdmin,
                     .key_hash = common::HashApiKey(options_.bootstrap_admin_key),
                     .prefix = options_.bootstrap_admin_key.substr(0, 8),
                     .create_time = {},
                     .revoke_time = {}};
    if (absl::Status s = registry_->EnsureTenantAndKey(tenant, key); !s.ok()) {
      return s;
    }
  }
  if (!options_.service_key.empty()) {
    TenantRecord platform{
        .tenant_id = "_platform", .name = "platform services", .root = false, .create_time = {}};
    ApiKeyRecord key{.key_id = "k_platform_service",
                     .tenant_id = platform.tenant_id,
                     .name = "platform service credential",
                     .role = Role::kService,
                     .key_hash = common::HashApiKey(options_.service_key),
                     .prefix = options_.service_key.substr(0, 8),
                     .create_time = {},
                     .revoke_time = {}};
    if (absl::Status s = registry_->EnsureTenantAndKey(platform, key); !s.ok()) {
      return s;
    }
  }
  return RebuildProjection();
}

absl::Status ThingModelService::ReconcileProjection() {
  bool dirty = false;
  {
    std::lock_guard lock(projection_mu_);
    dirty = projection_dirty_;
  }
  if (!dirty) {
    auto ready = projection_->IsReady();
    if (!ready.ok()) {
      return ready.status();
    }
    if (*ready) {
      return absl::OkStatus();
    }
    common::LogWarn("device projection missing in Redis (flushed?), rebuilding");
  }
  return RebuildProjection();
}

absl::Status ThingModelService::RebuildProjection() {
  {
    std::lock_guard lock(projection_mu_);
    projection_dirty_ = true;
  }
  // Devices go to Redis a batch per round trip: one round trip per device made a restart of
  // thing-model with 300 devices take 30 s to be SERVING on a loaded machine, O(devices) always.
  constexpr std::size_t kPutBatch = 500;
  std::vector<std::string> device_ids;
  std::vector<DeviceRecord> batch;
  absl::Status write_status = absl::OkStatus();
  const auto flush = [&] {
    if (write_status.ok()) {
      write_status = projection_->PutDevices(batch);
    }
    batch.clear();
  };
  absl::Status status = registry_->ForEachDevice([&](const DeviceRecord& device) {
    device_ids.push_back(device.device_id);
    batch.push_back(device);
    if (batch.size() >= kPutBatch) {
      flush();
    }
  });
  if (!status.ok()) {
    return status;
  }
  flush();
  if (!write_status.ok()) {
    return write_status;
  }
  auto keys = registry_->AllActiveKeys();
  if (!keys.ok()) {
    return keys.status();
  }
  std::vector<std::string> key_hashes;
  for (const auto& [key, root] : *keys) {
    key_hashes.push_back(key.key_hash);
    if (absl::Status s = projection_->PutKey(key, root); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = projection_->RemoveStale(device_ids, key_hashes); !s.ok()) {
    return s;
  }
  if (absl::Status s = projection_->MarkReady(); !s.ok()) {
    return s;
  }
  {
    std::lock_guard lock(projection_mu_);
    projection_dirty_ = false;
  }
  common::LogInfo("projection rebuilt",
                  {{"devices", device_ids.size()}, {"api_keys", key_hashes.size()}});
  return absl::OkStatus();
}

void ThingModelService::Project(const std::function<absl::Status()>& write) {
  if (absl::Status s = write(); !s.ok()) {
    // The change is committed in PostgreSQL; the reconciler rebuilds the projection.
    std::lock_guard lock(projection_mu_);
    projection_dirty_ = true;
    common::LogWarn("projection write failed; it will be rebuilt",
                    {{"error", std::string(s.message())}});
  }
}

absl::StatusOr<CreatedTenant> ThingModelService::CreateTenant(const Principal& caller,
                                                              std::string tenant_id,
                                                              std::string name,
                                                              bool create_admin_key) {
  if (!caller.root_tenant || caller.role != Role::kAdmin) {
    return absl::PermissionDeniedError("only an admin of the root tenant may create tenants");
  }
  if (tenant_id.empty()) {
    tenant_id = "t" + common::HexEncode(common::RandomBytes(8));
  }
  if (absl::Status s = CheckId("tenant_id", tenant_id, 64, false); !s.ok()) {
    return s;
  }
  if (tenant_id.front() == '_') {
    return InvalidField("tenant_id", "names starting with '_' are reserved");
  }
  if (name.empty() || name.size() > 128) {
    return InvalidField("name", "must be 1..128 characters");
  }
  CreatedTenant created;
  created.tenant = {
      .tenant_id = tenant_id, .name = name, .root = false, .create_time = NowRfc3339()};
  if (absl::Status s = registry_->CreateTenant(created.tenant); !s.ok()) {
    return s;
  }
  if (create_admin_key) {
    Principal admin{
        .tenant_id = tenant_id, .role = Role::kAdmin, .key_id = {}, .root_tenant = false};
    auto key = CreateApiKey(admin, "admin", Role::kAdmin);
    if (!key.ok()) {
      return key.status();
    }
    created.admin_key = *std::move(key);
  }
  return created;
}

absl::StatusOr<CreatedKey> ThingModelService::CreateApiKey(const Principal& caller,
                                                           std::string name, Role role) {
  if (caller.role != Role::kAdmin) {
    return absl::PermissionDeniedError("only admins manage API keys");
  }
  if (role == Role::kService) {
    return InvalidField("role", "service keys are configured, not created (IOT_SERVICE_API_KEY)");
  }
  if (name.size() > 128) {
    return InvalidField("name", "at most 128 characters");
  }
  CreatedKey created;
  created.secret = NewKeySecret();
  created.key = {.key_id = "k_" + common::HexEncode(common::RandomBytes(8)),
                 .tenant_id = caller.tenant_id,
                 .name = std::move(name),
                 .role = role,
                 .key_hash = common::HashApiKey(created.secret),
                 .prefix = created.secret.substr(0, 8),
                 .create_time = NowRfc3339(),
                 .revoke_time = {}};
  if (absl::Status s = registry_->CreateApiKey(created.key); !s.ok()) {
    return s;
  }
  Project([&] { return projection_->PutKey(created.key, caller.root_tenant); });
  return created;
}

absl::StatusOr<ApiKeyRecord> ThingModelService::RevokeApiKey(const Principal& caller,
                                                             const std::string& key_id) {
  if (caller.role != Role::kAdmin) {
    return absl::PermissionDeniedError("only admins manage API keys");
  }
  if (key_id.empty()) {
    return InvalidField("key_id", "is required");
  }
  auto key = registry_->RevokeApiKey(caller.tenant_id, key_id);
  if (!key.ok()) {
    return key.status();
  }
  Project([&] { return projection_->DeleteKey(*key); });
  Project([&] {
    return projection_->PublishChange(
        nlohmann::json{{"kind", "api_key"}, {"op", "revoke"}, {"key_id", key_id}}.dump());
  });
  return key;
}

absl::StatusOr<Page<ApiKeyRecord>> ThingModelService::ListApiKeys(const Principal& caller,
                                                                  const PageRequest& page,
                                                                  bool include_revoked) {
  if (caller.role != Role::kAdmin) {
    return absl::PermissionDeniedError("only admins manage API keys");
  }
  auto checked = CheckPage(page);
  if (!checked.ok()) {
    return checked.status();
  }
  return registry_->ListApiKeys(caller.tenant_id, *checked, include_revoked);
}

absl::StatusOr<ProductRecord> ThingModelService::ParseProduct(
    const std::string& tenant_id, const std::string& product_json,
    std::vector<ModelIssue>* issues) const {
  ModelDiagnostics diagnostics;
  auto parsed = ParseProductModel(product_json, &diagnostics);
  if (!parsed.ok()) {
    if (issues != nullptr) {
      *issues = std::move(diagnostics.errors);
    }
    return parsed.status();
  }
  ProductRecord product;
  product.tenant_id = tenant_id;
  product.product_id = parsed->product_id;
  product.name = parsed->name;
  product.device_type = parsed->device_type;
  product.protocol_type = parsed->protocol_type;
  product.data_format = parsed->data_format;
  product.manufacturer_name = parsed->manufacturer_name;
  product.industry = parsed->industry;
  product.description = parsed->description;
  product.product_json = std::move(parsed->source);
  if (product.name.empty() || product.name.size() > 128) {
    return InvalidField("name", "must be 1..128 characters");
  }
  return product;
}

absl::StatusOr<ProductRecord> ThingModelService::ParseTslProduct(
    const std::string& tenant_id, const std::string& tsl_json, const std::string& product_id,
    std::vector<ModelIssue>* issues) const {
  ModelDiagnostics diagnostics;
  auto tsl = ConvertTsl(tsl_json, &diagnostics);
  if (!tsl.ok()) {
    if (issues != nullptr) {
      *issues = std::move(diagnostics.errors);
    }
    return tsl.status();
  }
  std::string key = tsl->product_key;
  if (!product_id.empty()) {
    if (!key.empty() && key != product_id) {
      return InvalidField("profile.productKey",
                          fmt::format("'{}' differs from product_id '{}'", key, product_id));
    }
    key = product_id;
  } else if (key.empty()) {
    key = NewProductKey();
  }
  tsl->model["product_id"] = key;
  tsl->model["name"] = tsl->product_name.empty() ? key : tsl->product_name;
  auto product = ParseProduct(tenant_id, tsl->model.dump(), issues);
  if (!product.ok()) {
    return product.status();
  }
  product->dialect = kDialectAlink;
  product->tsl_json = tsl_json;
  return product;
}

absl::StatusOr<ProductRecord> ThingModelService::CreateProduct(const Principal& caller,
                                                               const std::string& product_json,
                                                               const std::string& tsl_json,
                                                               std::vector<ModelIssue>* issues) {
  if (absl::Status s = CheckTenantWrite(caller, "create products"); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckOneModel(product_json, tsl_json); !s.ok()) {
    return s;
  }
  auto product = tsl_json.empty() ? ParseProduct(caller.tenant_id, product_json, issues)
                                  : ParseTslProduct(caller.tenant_id, tsl_json, {}, issues);
  if (!product.ok()) {
    return product.status();
  }
  if (product->product_id.empty()) {
    // IoTDA's product ids are 24 hex characters; the JSON kept is the one given.
    product->product_id = common::HexEncode(common::RandomBytes(12));
  }
  if (absl::Status s = CheckId("product_id", product->product_id, 64, true); !s.ok()) {
    return s;
  }
  product->model_version = 1;
  product->create_time = product->update_time = NowRfc3339();
  if (absl::Status s = registry_->CreateProduct(*product); !s.ok()) {
    return s;
  }
  Project([&] {
    return projection_->PublishChange(nlohmann::json{
        {"kind", "product"},
        {"op", "create"},
        {"product_id", product->product_id},
        {"tenant_id", product->tenant_id},
        {"dialect", product->dialect},
        {"model_version", 1}}.dump());
  });
  return registry_->GetProduct(caller.tenant_id, product->product_id, 0);
}

absl::StatusOr<ProductRecord> ThingModelService::ShowProduct(const Principal& caller,
                                                             const std::string& product_id,
                                                             int32_t version) {
  if (product_id.empty()) {
    return InvalidField("product_id", "is required");
  }
  if (version < 0) {
    return InvalidField("model_version", "must be 0 (current) or a version number");
  }
  return registry_->GetProduct(caller.tenant_id, product_id, version);
}

absl::StatusOr<ProductRecord> ThingModelService::UpdateProduct(const Principal& caller,
                                                               const std::string& product_id,
                                                               const std::string& product_json,
                                                               const std::string& tsl_json,
                                                               std::vector<ModelIssue>* issues) {
  if (absl::Status s = CheckTenantWrite(caller, "update products"); !s.ok()) {
    return s;
  }
  if (product_id.empty()) {
    return InvalidField("product_id", "is required");
  }
  if (absl::Status s = CheckOneModel(product_json, tsl_json); !s.ok()) {
    return s;
  }
  auto current = registry_->GetProduct(caller.tenant_id, product_id, 0);
  if (!current.ok()) {
    return current.status();
  }
  // A product keeps its dialect: its devices' identities and topics depend on it.
  const bool alink = current->dialect == kDialectAlink;
  if (alink && tsl_json.empty()) {
    return InvalidField("tsl_json", fmt::format("product '{}' is an alink product: update it "
                                                "with tsl_json, not product_json",
                                                product_id));
  }
  if (!alink && !tsl_json.empty()) {
    return InvalidField("product_json", fmt::format("product '{}' is a huawei product: update it "
                                                    "with product_json, not tsl_json",
                                                    product_id));
  }
  auto product = alink ? ParseTslProduct(caller.tenant_id, tsl_json, product_id, issues)
                       : ParseProduct(caller.tenant_id, product_json, issues);
  if (!product.ok()) {
    return product.status();
  }
  if (!product->product_id.empty() && product->product_id != product_id) {
    return InvalidField("product_json.product_id", "differs from product_id");
  }
  product->product_id = product_id;
  const auto old_model = nlohmann::json::parse(current->product_json, nullptr, false);
  const auto new_model = nlohmann::json::parse(product->product_json, nullptr, false);
  const bool model_changed = old_model.value("service_capabilities", nlohmann::json()) !=
                             new_model.value("service_capabilities", nlohmann::json());
  auto updated = registry_->UpdateProduct(*product, model_changed);
  if (!updated.ok()) {
    return updated.status();
  }
  Project([&] {
    return projection_->PublishChange(nlohmann::json{
        {"kind", "product"},
        {"op", "update"},
        {"product_id", product_id},
        {"tenant_id", caller.tenant_id},
        {"model_version",
         updated->model_version}}.dump());
  });
  return updated;
}

absl::StatusOr<int64_t> ThingModelService::DeleteProduct(const Principal& caller,
                                                         const std::string& product_id,
                                                         bool force) {
  if (absl::Status s = CheckTenantWrite(caller, "delete products"); !s.ok()) {
    return s;
  }
  if (product_id.empty()) {
    return InvalidField("product_id", "is required");
  }
  std::vector<std::string> deleted;
  auto count = registry_->DeleteProduct(caller.tenant_id, product_id, force, &deleted);
  if (!count.ok()) {
    return count.status();
  }
  for (const std::string& device_id : deleted) {
    DeviceRecord gone;
    gone.device_id = device_id;
    gone.tenant_id = caller.tenant_id;
    gone.product_id = product_id;
    Project([&] { return projection_->DeleteDevice(gone); });
    Project([&] { return projection_->PublishChange(DeviceChange(gone, "delete").dump()); });
  }
  Project([&] {
    return projection_->PublishChange(nlohmann::json{
        {"kind", "product"},
        {"op", "delete"},
        {"product_id", product_id},
        {"tenant_id", caller.tenant_id}}.dump());
  });
  return count;
}

absl::StatusOr<Page<ProductRecord>> ThingModelService::ListProducts(const Principal& caller,
                                                                    const PageRequest& page,
                                                                    const ProductFilter& filter) {
  auto checked = CheckPage(page);
  if (!checked.ok()) {
    return checked.status();
  }
  return registry_->ListProducts(caller.tenant_id, *checked, filter);
}

absl::StatusOr<std::vector<std::pair<int32_t, std::string>>> ThingModelService::ListModelVersions(
    const Principal& caller, const std::string& product_id) {
  if (product_id.empty()) {
    return InvalidField("product_id", "is required");
  }
  return registry_->ListModelVersions(caller.tenant_id, product_id);
}

absl::StatusOr<CreatedDevice> ThingModelService::AddDevice(const Principal& caller,
                                                           DeviceRecord device,
                                                           std::string secret) {
  if (absl::Status s = CheckTenantWrite(caller, "add devices"); !s.ok()) {
    return s;
  }
  if (device.product_id.empty()) {
    return InvalidField("product_id", "is required");
  }
  auto product = registry_->GetProduct(caller.tenant_id, device.product_id, 0);
  if (!product.ok()) {
    return product.status();
  }
  // An Alink device's node id is its Alibaba deviceName and its device id {productKey}_{name}:
  // the broker finds it by the username {deviceName}&{productKey} it connects with.
  const bool alink = product->dialect == kDialectAlink;
  const std::string_view id_extra = alink ? kAlinkIdExtra : "_-";
  if (absl::Status s = CheckId("node_id", device.node_id, 64, true, id_extra); !s.ok()) {
    return s;
  }
  const std::string canonical_id = device.product_id + "_" + device.node_id;
  if (device.device_id.empty()) {
    device.device_id = canonical_id;
  } else if (alink && device.device_id != canonical_id) {
    return InvalidField("device_id",
                        fmt::format("an alink device's id is {{product_id}}_{{node_id}} "
                                    "('{}'); leave it empty",
                                    canonical_id));
  }
  if (absl::Status s = CheckId("device_id", device.device_id, 128, true, id_extra); !s.ok()) {
    return s;
  }
  device.dialect = product->dialect;
  if (!device.fingerprint.empty()) {
    auto raw = common::HexDecode(device.fingerprint);
    if (!raw.ok() || raw->size() != 32) {
      return InvalidField("fingerprint", "must be the certificate's SHA-256 as 64 hex characters");
    }
    device.fingerprint = common::HexEncode(*raw);
  }
  if (!secret.empty() && (secret.size() < 8 || secret.size() > 32)) {
    return InvalidField("secret", "must be 8..32 characters");
  }
  if (secret.empty() && device.fingerprint.empty()) {
    secret = common::HexEncode(common::RandomBytes(16));
  }
  if (device.device_name.size() > 256) {
    return InvalidField("device_name", "at most 256 characters");
  }
  device.tenant_id = caller.tenant_id;
  device.secret_sealed = secret.empty() ? std::string() : secrets_.Seal(secret, device.device_id);
  device.frozen = false;
  device.connection = Connection::kInactive;
  device.create_time = NowRfc3339();
  if (absl::Status s = registry_->CreateDevice(device); !s.ok()) {
    return s;
  }
  Project([&] { return projection_->PutDevice(device); });
  Project([&] { return projection_->PublishChange(DeviceChange(device, "upsert").dump()); });
  return CreatedDevice{.device = std::move(device), .secret = std::move(secret)};
}

absl::StatusOr<DeviceRecord> ThingModelService::ShowDevice(const Principal& caller,
                                                           const std::string& device_id) {
  if (device_id.empty()) {
    return InvalidField("device_id", "is required");
  }
  return registry_->GetDevice(caller.tenant_id, device_id);
}

absl::StatusOr<DeviceRecord> ThingModelService::UpdateDevice(const Principal& caller,
                                                             const std::string& device_id,
                                                             const DeviceUpdate& update) {
  if (absl::Status s = CheckTenantWrite(caller, "update devices"); !s.ok()) {
    return s;
  }
  auto device = ShowDevice(caller, device_id);
  if (!device.ok()) {
    return device.status();
  }
  if (update.device_name) {
    if (update.device_name->size() > 256) {
      return InvalidField("device_name", "at most 256 characters");
    }
    device->device_name = *update.device_name;
  }
  if (update.description) {
    device->description = *update.description;
  }
  if (update.tags) {
    for (const auto& [key, value] : *update.tags) {
      if (key.empty() || key.size() > 64 || value.size() > 256) {
        return InvalidField("tags", "keys must be 1..64 and values at most 256 characters");
      }
    }
    device->tags = *update.tags;
  }
  if (absl::Status s = registry_->UpdateDevice(*device); !s.ok()) {
    return s;
  }
  return device;
}

absl::Status ThingModelService::DeleteDevice(const Principal& caller,
                                             const std::string& device_id) {
  if (absl::Status s = CheckTenantWrite(caller, "delete devices"); !s.ok()) {
    return s;
  }
  auto device = ShowDevice(caller, device_id);
  if (!device.ok()) {
    return device.status();
  }
  if (absl::Status s = registry_->DeleteDevice(caller.tenant_id, device_id); !s.ok()) {
    return s;
  }
  Project([&] { return projection_->DeleteDevice(*device); });
  Project([&] { return projection_->PublishChange(DeviceChange(*device, "delete").dump()); });
  return absl::OkStatus();
}

absl::StatusOr<Page<DeviceRecord>> ThingModelService::ListDevices(const Principal& caller,
                                                                  const PageRequest& page,
                                                                  const DeviceFilter& filter) {
  auto checked = CheckPage(page);
  if (!checked.ok()) {
    return checked.status();
  }
  if (!filter.tag_value.empty() && filter.tag_key.empty()) {
    return InvalidField("tag_key", "is required with tag_value");
  }
  return registry_->ListDevices(caller.tenant_id, *checked, filter);
}

absl::StatusOr<CreatedDevice> ThingModelService::ResetDeviceSecret(const Principal& caller,
                                                                   const std::string& device_id,
                                                                   std::string secret) {
  if (absl::Status s = CheckTenantWrite(caller, "reset secrets"); !s.ok()) {
    return s;
  }
  if (!secret.empty() && (secret.size() < 8 || secret.size() > 32)) {
    return InvalidField("secret", "must be 8..32 characters");
  }
  auto device = ShowDevice(caller, device_id);
  if (!device.ok()) {
    return device.status();
  }
  if (secret.empty()) {
    secret = common::HexEncode(common::RandomBytes(16));
  }
  device->secret_sealed = secrets_.Seal(secret, device->device_id);
  if (absl::Status s = registry_->UpdateDevice(*device); !s.ok()) {
    return s;
  }
  Project([&] { return projection_->PutDevice(*device); });
  Project([&] { return projection_->PublishChange(DeviceChange(*device, "upsert").dump()); });
  return CreatedDevice{.device = *std::move(device), .secret = std::move(secret)};
}

absl::StatusOr<DeviceRecord> ThingModelService::SetFrozen(const Principal& caller,
                                                          const std::string& device_id,
                                                          bool frozen) {
  if (absl::Status s = CheckTenantWrite(caller, "freeze devices"); !s.ok()) {
    return s;
  }
  auto device = ShowDevice(caller, device_id);
  if (!device.ok()) {
    return device.status();
  }
  device->frozen = frozen;
  if (absl::Status s = registry_->UpdateDevice(*device); !s.ok()) {
    return s;
  }
  Project([&] { return projection_->PutDevice(*device); });
  Project([&] { return projection_->PublishChange(DeviceChange(*device, "upsert").dump()); });
  return device;
}

absl::StatusOr<DeviceRecord> ThingModelService::ReportPresence(const std::string& device_id,
                                                               bool online,
                                                               const std::string& time) {
  if (device_id.empty()) {
    return InvalidField("device_id", "is required");
  }
  return registry_->SetPresence(device_id, online, time.empty() ? NowRfc3339() : time);
}

absl::StatusOr<std::pair<DeviceRecord, ProductRecord>> ThingModelService::DeviceContext(
    const std::string& device_id) {
  if (device_id.empty()) {
    return InvalidField("device_id", "is required");
  }
  auto device = registry_->GetDevice("", device_id);
  if (!device.ok()) {
    return device.status();
  }
  auto product = registry_->GetProduct(device->tenant_id, device->product_id, 0);
  if (!product.ok()) {
    return product.status();
  }
  return std::make_pair(*std::move(device), *std::move(product));
}

absl::StatusOr<std::string> ThingModelService::OpenSecret(const DeviceRecord& device) const {
  if (device.secret_sealed.empty()) {
    return absl::NotFoundError("device has no secret");
  }
  return secrets_.Open(device.secret_sealed, device.device_id);
}

}  // namespace iot::thing_model
