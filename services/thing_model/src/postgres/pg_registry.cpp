#include "iot/thing_model/pg_registry.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

namespace iot::thing_model {
namespace {

// Timestamps leave the database as RFC 3339 UTC text.
#define IOT_TS(col) \
  "coalesce(to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '')"

constexpr const char* kKeyColumns = "key_id, tenant_id, name, role, key_hash, prefix, " IOT_TS(
    "created_at") ", " IOT_TS("revoked_at");

constexpr const char* kProductColumns =
    "p.product_id, p.tenant_id, p.name, p.device_type, p.protocol_type, p.data_format, "
    "p.manufacturer_name, p.industry, p.description, p.model_version, " IOT_TS(
        "p.created_at") ", " IOT_TS("p.updated_at") ", p.dialect";

constexpr const char* kDeviceColumns =
    "device_id, tenant_id, product_id, node_id, device_name, description, tags::text, "
    "coalesce(secret_sealed, ''), coalesce(fingerprint, ''), frozen, connection, " IOT_TS(
        "presence_time") ", " IOT_TS("last_online_at") ", " IOT_TS("last_offline_at") ", " IOT_TS("created_at") ", "
    // The product's dialect, which the projection and the device context carry.
    "(SELECT p.dialect FROM thing_model.products p WHERE p.product_id = devices.product_id)";

ApiKeyRecord KeyFromRow(const pqxx::row& r) {
  ApiKeyRecord key;
  key.key_id = r[0].as<std::string>();
  key.tenant_id = r[1].as<std::string>();
  key.name = r[2].as<std::string>();
  key.role = common::ParseRole(r[3].as<std::string>()).value_or(common::Role::kReader);
  key.key_hash = r[4].as<std::string>();
  key.prefix = r[5].as<std::string>();
  key.create_time = r[6].as<std::string>();
  key.revoke_time = r[7].as<std::string>();
  return key;
}

ProductRecord ProductFromRow(const pqxx::row& r) {
  ProductRecord p;
  p.product_id = r[0].as<std::string>();
  p.tenant_id = r[1].as<std::string>();
  p.name = r[2].as<std::string>();
  p.device_type = r[3].as<std::string>();
  p.protocol_type = r[4].as<std::string>();
  p.data_format = r[5].as<std::string>();
  p.manufacturer_name = r[6].as<std::string>();
  p.industry = r[7].as<std::string>();
  p.description = r[8].as<std::string>();
  p.model_version = r[9].as<int32_t>();
  p.create_time = r[10].as<std::string>();
  p.update_time = r[11].as<std::string>();
  p.dialect = r[12].as<std::string>();
  return p;
}

Connection ParseConnection(const std::string& s) {
  if (s == "ONLINE") {
    return Connection::kOnline;
  }
  if (s == "OFFLINE") {
    return Connection::kOffline;
  }
  return Connection::kInactive;
}

const char* ConnectionText(Connection c) {
  switch (c) {
    case Connection::kOnline:
      return "ONLINE";
    case Connection::kOffline:
      return "OFFLINE";
    case Connection::kInactive:
      break;
  }
  return "INACTIVE";
}

DeviceRecord DeviceFromRow(const pqxx::row& r) {
  DeviceRecord d;
  d.device_id = r[0].as<std::string>();
  d.tenant_id = r[1].as<std::string>();
  d.product_id = r[2].as<std::string>();
  d.node_id = r[3].as<std::string>();
  d.device_name = r[4].as<std::string>();
  d.description = r[5].as<std::string>();
  const auto tags = nlohmann::json::parse(r[6].as<std::string>(), nullptr, false);
  if (tags.is_object()) {
    for (const auto& [k, v] : tags.items()) {
      d.tags[k] = v.is_string() ? v.get<std::string>() : v.dump();
    }
  }
  d.secret_sealed = r[7].as<std::string>();
  d.fingerprint = r[8].as<std::string>();
  d.frozen = r[9].as<bool>();
  d.connection = ParseConnection(r[10].as<std::string>());
  d.presence_time = r[11].as<std::string>();
  d.last_online_time = r[12].as<std::string>();
  d.last_offline_time = r[13].as<std::string>();
  d.create_time = r[14].as<std::string>();
  d.dialect = r[15].is_null() ? kDialectHuawei : r[15].as<std::string>();
  return d;
}

std::string TagsJson(const std::map<std::string, std::string>& tags) {
  return nlohmann::json(tags).dump();
}

absl::Status NotFound(std::string_view what, std::string_view id) {
  return absl::NotFoundError(fmt::format("{} '{}' not found", what, id));
}

/// One more row than the page asks for tells whether there is a next page.
template <typename T>
Page<T> MakePage(std::vector<T> items, int32_t limit,
                 const std::function<std::string(const T&)>& id) {
  Page<T> page;
  if (items.size() > static_cast<size_t>(limit)) {
    items.resize(static_cast<size_t>(limit));
    page.next_marker = id(items.back());
  }
  page.items = std::move(items);
  return page;
}

}  // namespace

absl::Status PgRegistry::CreateTenant(const TenantRecord& tenant) {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work w(c);
    w.exec_params("INSERT INTO thing_model.tenants (tenant_id, name, root) VALUES ($1, $2, $3)",
                  tenant.tenant_id, tenant.name, tenant.root);
    w.commit();
  });
}

absl::Status PgRegistry::EnsureTenantAndKey(const TenantRecord& tenant, const ApiKeyRecord& key) {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work w(c);
    w.exec_params(
        "INSERT INTO thing_model.tenants (tenant_id, name, root) VALUES ($1, $2, $3) "
        "ON CONFLICT (tenant_id) DO NOTHING",
        tenant.tenant_id, tenant.name, tenant.root);
    // A changed bootstrap key replaces the old one (same key_id).
    w.exec_params(
        "INSERT INTO thing_model.api_keys (key_id, tenant_id, name, role, key_hash, prefix) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id) DO UPDATE SET "
        "key_hash = EXCLUDED.key_hash, prefix = EXCLUDED.prefix, revoked_at = NULL",
        key.key_id, key.tenant_id, key.name, std::string(common::RoleName(key.role)), key.key_hash,
        key.prefix);
    w.commit();
  });
}

absl::Status PgRegistry::CreateApiKey(const ApiKeyRecord& key) {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work w(c);
    w.exec_params(
        "INSERT INTO thing_model.api_keys (key_id, tenant_id, name, role, key_hash, prefix) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        key.key_id, key.tenant_id, key.name, std::string(common::RoleName(key.role)), key.key_hash,
        key.prefix);
    w.commit();
  });
}

absl::StatusOr<ApiKeyRecord> PgRegistry::RevokeApiKey(const std::string& tenant_id,
                                                      const std::string& key_id) {
  return pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<ApiKeyRecord> {
    pqxx::work w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("UPDATE thing_model.api_keys SET revoked_at = coalesce(revoked_at, now()) "
                    "WHERE tenant_id = $1 AND key_id = $2 RETURNING {}",
                    kKeyColumns),
        tenant_id, key_id);
    w.commit();
    if (r.empty()) {
      return NotFound("API key", key_id);
    }
    return KeyFromRow(r[0]);
  });
}

absl::StatusOr<Page<ApiKeyRecord>> PgRegistry::ListApiKeys(const std::string& tenant_id,
                                                           const PageRequest& page,
                                                           bool include_revoked) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {} FROM thing_model.api_keys WHERE tenant_id = $1 AND key_id > $2 "
                    "AND ($3 OR revoked_at IS NULL) ORDER BY key_id LIMIT $4",
                    kKeyColumns),
        tenant_id, page.marker, include_revoked, page.limit + 1);
    std::vector<ApiKeyRecord> keys;
    for (const auto& row : r) {
      keys.push_back(KeyFromRow(row));
    }
    return MakePage<ApiKeyRecord>(std::move(keys), page.limit,
                                  [](const ApiKeyRecord& k) { return k.key_id; });
  });
}

absl::StatusOr<std::vector<std::pair<ApiKeyRecord, bool>>> PgRegistry::AllActiveKeys() {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction w(c);
    const pqxx::result r = w.exec(
        fmt::format("SELECT {}, root FROM (SELECT k.*, t.root FROM thing_model.api_keys k JOIN "
                    "thing_model.tenants t USING (tenant_id) WHERE k.revoked_at IS NULL) x",
                    kKeyColumns));
    std::vector<std::pair<ApiKeyRecord, bool>> keys;
    for (const auto& row : r) {
      keys.emplace_back(KeyFromRow(row), row[8].as<bool>());
    }
    return keys;
  });
}

absl::Status PgRegistry::CreateProduct(const ProductRecord& p) {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work w(c);
    w.exec_params(
        "INSERT INTO thing_model.products (product_id, tenant_id, name, device_type, "
        "protocol_type, data_format, manufacturer_name, industry, description, model_version, "
        "dialect) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10)",
        p.product_id, p.tenant_id, p.name, p.device_type, p.protocol_type, p.data_format,
        p.manufacturer_name, p.industry, p.description, p.dialect);
    w.exec_params(
        "INSERT INTO thing_model.product_models (product_id, model_version, product_json, "
        "tsl_json) VALUES ($1, 1, $2, NULLIF($3, ''))",
        p.product_id, p.product_json, p.tsl_json);
    w.commit();
  });
}

absl::StatusOr<ProductRecord> PgRegistry::GetProduct(const std::string& tenant_id,
                                                     const std::string& product_id,
                                                     int32_t model_version) {
  return pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<ProductRecord> {
    pqxx::read_transaction w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {}, m.product_json, m.model_version, "
                    "(SELECT count(*) FROM thing_model.devices d WHERE d.product_id = "
                    "p.product_id), coalesce(m.tsl_json, '') FROM thing_model.products p JOIN "
                    "thing_model.product_models m "
                    "ON m.product_id = p.product_id AND m.model_version = CASE WHEN $3 = 0 THEN "
                    "p.model_version ELSE $3 END WHERE p.tenant_id = $1 AND p.product_id = $2",
                    kProductColumns),
        tenant_id, product_id, model_version);
    if (r.empty()) {
      return model_version == 0
                 ? NotFound("product", product_id)
                 : absl::NotFoundError(fmt::format("product '{}' has no model version {}",
                                                   product_id, model_version));
    }
    ProductRecord p = ProductFromRow(r[0]);
    p.product_json = r[0][13].as<std::string>();
    p.model_version = r[0][14].as<int32_t>();
    p.device_count = r[0][15].as<int64_t>();
    p.tsl_json = r[0][16].as<std::string>();
    return p;
  });
}

absl::StatusOr<ProductRecord> PgRegistry::UpdateProduct(const ProductRecord& p,
                                                        bool new_model_version) {
  absl::Status status = pool_->Call([&](pqxx::connection& c) -> absl::Status {
    pqxx::work w(c);
    const pqxx::result r = w.exec_params(
        "UPDATE thing_model.products SET name = $3, device_type = $4, protocol_type = $5, "
        "data_format = $6, manufacturer_name = $7, industry = $8, description = $9, "
        "model_version = model_version + CASE WHEN $10 THEN 1 ELSE 0 END, updated_at = now() "
        "WHERE tenant_id = $1 AND product_id = $2 RETURNING model_version",
        p.tenant_id, p.product_id, p.name, p.device_type, p.protocol_type, p.data_format,
        p.manufacturer_name, p.industry, p.description, new_model_version);
    if (r.empty()) {
      return NotFound("product", p.product_id);
    }
    const auto version = r[0][0].as<int32_t>();
    // Metadata-only changes rewrite the current version's JSON; model changes add a version.
    w.exec_params(
        "INSERT INTO thing_model.product_models (product_id, model_version, product_json, "
        "tsl_json) VALUES ($1, $2, $3, NULLIF($4, '')) ON CONFLICT (product_id, model_version) "
        "DO UPDATE SET product_json = EXCLUDED.product_json, tsl_json = EXCLUDED.tsl_json",
        p.product_id, version, p.product_json, p.tsl_json);
    w.commit();
    return absl::OkStatus();
  });
  if (!status.ok()) {
    return status;
  }
  return GetProduct(p.tenant_id, p.product_id, 0);
}

absl::StatusOr<int64_t> PgRegistry::DeleteProduct(const std::string& tenant_id,
                                                  const std::string& product_id, bool force,
                                                  std::vector<std::string>* deleted_devices) {
  return pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<int64_t> {
    pqxx::work w(c);
    const pqxx::result p = w.exec_params(
        "SELECT 1 FROM thing_model.products WHERE tenant_id = $1 AND product_id = $2 FOR UPDATE",
        tenant_id, product_id);
    if (p.empty()) {
      return NotFound("product", product_id);
    }
    const pqxx::result devices = w.exec_params(
        "SELECT device_id FROM thing_model.devices WHERE product_id = $1 FOR UPDATE", product_id);
    if (!devices.empty() && !force) {
      return absl::FailedPreconditionError(
          fmt::format("product '{}' has {} devices: delete them first or pass force", product_id,
                      devices.size()));
    }
    w.exec_params("DELETE FROM thing_model.devices WHERE product_id = $1", product_id);
    w.exec_params("DELETE FROM thing_model.products WHERE product_id = $1", product_id);
    w.commit();
    deleted_devices->clear();
    for (const auto& row : devices) {
      deleted_devices->push_back(row[0].as<std::string>());
    }
    return static_cast<int64_t>(devices.size());
  });
}

absl::StatusOr<Page<ProductRecord>> PgRegistry::ListProducts(const std::string& tenant_id,
                                                             const PageRequest& page,
                                                             const ProductFilter& filter) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {}, (SELECT count(*) FROM thing_model.devices d WHERE d.product_id "
                    "= p.product_id) FROM thing_model.products p WHERE p.tenant_id = $1 AND "
                    "p.product_id > $2 AND ($3 = '' OR strpos(lower(p.name), lower($3)) > 0) AND "
                    "($4 = '' OR p.device_type = $4) ORDER BY p.product_id LIMIT $5",
                    kProductColumns),
        tenant_id, page.marker, filter.name_contains, filter.device_type, page.limit + 1);
    std::vector<ProductRecord> products;
    for (const auto& row : r) {
      products.push_back(ProductFromRow(row));
      products.back().device_count = row[13].as<int64_t>();
    }
    return MakePage<ProductRecord>(std::move(products), page.limit,
                                   [](const ProductRecord& p) { return p.product_id; });
  });
}

absl::StatusOr<std::vector<std::pair<int32_t, std::string>>> PgRegistry::ListModelVersions(
    const std::string& tenant_id, const std::string& product_id) {
  return pool_->Call(
      [&](pqxx::connection& c) -> absl::StatusOr<std::vector<std::pair<int32_t, std::string>>> {
        pqxx::read_transaction w(c);
        const pqxx::result r = w.exec_params(
            "SELECT m.model_version, " IOT_TS(
                "m.created_at") " FROM thing_model.product_models m JOIN thing_model.products p "
                                "USING (product_id) WHERE p.tenant_id = $1 AND p.product_id = $2 "
                                "ORDER BY m.model_version",
            tenant_id, product_id);
        if (r.empty()) {
          return NotFound("product", product_id);
        }
        std::vector<std::pair<int32_t, std::string>> versions;
        for (const auto& row : r) {
          versions.emplace_back(row[0].as<int32_t>(), row[1].as<std::string>());
        }
        return versions;
      });
}

absl::Status PgRegistry::CreateDevice(const DeviceRecord& d) {
  absl::Status status = pool_->Run([&](pqxx::connection& c) {
    pqxx::work w(c);
    w.exec_params(
        "INSERT INTO thing_model.devices (device_id, tenant_id, product_id, node_id, "
        "device_name, description, tags, secret_sealed, fingerprint) VALUES ($1, $2, $3, $4, "
        "$5, $6, $7::jsonb, NULLIF($8, ''), NULLIF($9, ''))",
        d.device_id, d.tenant_id, d.product_id, d.node_id, d.device_name, d.description,
        TagsJson(d.tags), d.secret_sealed, d.fingerprint);
    w.commit();
  });
  if (status.code() == absl::StatusCode::kAlreadyExists) {
    return absl::AlreadyExistsError(
        fmt::format("a device with device_id '{}' or node_id '{}' in product '{}' already exists",
                    d.device_id, d.node_id, d.product_id));
  }
  return status;
}

absl::StatusOr<DeviceRecord> PgRegistry::GetDevice(const std::string& tenant_id,
                                                   const std::string& device_id) {
  return pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<DeviceRecord> {
    pqxx::read_transaction w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {} FROM thing_model.devices WHERE device_id = $2 AND ($1 = '' OR "
                    "tenant_id = $1)",
                    kDeviceColumns),
        tenant_id, device_id);
    if (r.empty()) {
      return NotFound("device", device_id);
    }
    return DeviceFromRow(r[0]);
  });
}

absl::Status PgRegistry::UpdateDevice(const DeviceRecord& d) {
  return pool_->Call([&](pqxx::connection& c) -> absl::Status {
    pqxx::work w(c);
    const pqxx::result r = w.exec_params(
        "UPDATE thing_model.devices SET device_name = $3, description = $4, tags = $5::jsonb, "
        "secret_sealed = NULLIF($6, ''), fingerprint = NULLIF($7, ''), frozen = $8 "
        "WHERE tenant_id = $1 AND device_id = $2 RETURNING 1",
        d.tenant_id, d.device_id, d.device_name, d.description, TagsJson(d.tags), d.secret_sealed,
        d.fingerprint, d.frozen);
    w.commit();
    return r.empty() ? NotFound("device", d.device_id) : absl::OkStatus();
  });
}

absl::Status PgRegistry::DeleteDevice(const std::string& tenant_id, const std::string& device_id) {
  return pool_->Call([&](pqxx::connection& c) -> absl::Status {
    pqxx::work w(c);
    const pqxx::result r = w.exec_params(
        "DELETE FROM thing_model.devices WHERE tenant_id = $1 AND device_id = $2 RETURNING 1",
        tenant_id, device_id);
    w.commit();
    return r.empty() ? NotFound("device", device_id) : absl::OkStatus();
  });
}

absl::StatusOr<Page<DeviceRecord>> PgRegistry::ListDevices(const std::string& tenant_id,
                                                           const PageRequest& page,
                                                           const DeviceFilter& f) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction w(c);
    const std::string tag =
        f.tag_key.empty() ? std::string() : nlohmann::json{{f.tag_key, f.tag_value}}.dump();
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {} FROM thing_model.devices WHERE tenant_id = $1 AND device_id > $2 "
                    "AND ($3 = '' OR product_id = $3) "
                    "AND ($4 = '' OR ($4 = 'FROZEN' AND frozen) OR (NOT frozen AND connection = "
                    "$4)) AND ($5 = '' OR (CASE WHEN $6 = '' THEN tags ? $5 ELSE tags @> "
                    "$7::jsonb END)) AND ($8 = '' OR starts_with(device_name, $8)) "
                    "ORDER BY device_id LIMIT $9",
                    kDeviceColumns),
        tenant_id, page.marker, f.product_id, f.status, f.tag_key, f.tag_value,
        tag.empty() ? std::string("{}") : tag, f.name_prefix, page.limit + 1);
    std::vector<DeviceRecord> devices;
    for (const auto& row : r) {
      devices.push_back(DeviceFromRow(row));
    }
    return MakePage<DeviceRecord>(std::move(devices), page.limit,
                                  [](const DeviceRecord& d) { return d.device_id; });
  });
}

absl::StatusOr<DeviceRecord> PgRegistry::SetPresence(const std::string& device_id, bool online,
                                                     const std::string& time) {
  return pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<DeviceRecord> {
    pqxx::work w(c);
    // Events older than the last one applied (reordered or replayed) change nothing.
    w.exec_params(
        "UPDATE thing_model.devices SET connection = $2, presence_time = $3::timestamptz, "
        "last_online_at = CASE WHEN $2 = 'ONLINE' THEN $3::timestamptz ELSE last_online_at END, "
        "last_offline_at = CASE WHEN $2 = 'OFFLINE' THEN $3::timestamptz ELSE last_offline_at "
        "END WHERE device_id = $1 AND (presence_time IS NULL OR presence_time <= "
        "$3::timestamptz)",
        device_id, std::string(ConnectionText(online ? Connection::kOnline : Connection::kOffline)),
        time);
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {} FROM thing_model.devices WHERE device_id = $1", kDeviceColumns),
        device_id);
    w.commit();
    if (r.empty()) {
      return NotFound("device", device_id);
    }
    return DeviceFromRow(r[0]);
  });
}

absl::Status PgRegistry::ForEachDevice(const std::function<void(const DeviceRecord&)>& fn) {
  std::string marker;
  constexpr int kBatch = 1000;
  while (true) {
    auto batch = pool_->Call([&](pqxx::connection& c) {
      pqxx::read_transaction w(c);
      const pqxx::result r = w.exec_params(
          fmt::format("SELECT {} FROM thing_model.devices WHERE device_id > $1 ORDER BY "
                      "device_id LIMIT $2",
                      kDeviceColumns),
          marker, kBatch);
      std::vector<DeviceRecord> devices;
      for (const auto& row : r) {
        devices.push_back(DeviceFromRow(row));
      }
      return devices;
    });
    if (!batch.ok()) {
      return batch.status();
    }
    for (const DeviceRecord& d : *batch) {
      fn(d);
    }
    if (batch->size() < static_cast<size_t>(kBatch)) {
      return absl::OkStatus();
    }
    marker = batch->back().device_id;
  }
}

}  // namespace iot::thing_model
