#include "iot/shadow/pg_durable_store.h"

#include <pqxx/pqxx>

namespace iot::shadow {
namespace {

constexpr const char* kColumns =
    "device_id, tenant_id, version, reported::text, desired::text, "
    "COALESCE(last_property_set::text, '')";

DeviceShadow FromRow(const pqxx::row& row) {
  DeviceShadow shadow;
  shadow.exists = true;
  shadow.device_id = row[0].as<std::string>();
  shadow.tenant_id = row[1].as<std::string>();
  shadow.version = row[2].as<int64_t>();
  SideFromJson(nlohmann::json::parse(row[3].as<std::string>(), nullptr, false), false,
               shadow.services);
  SideFromJson(nlohmann::json::parse(row[4].as<std::string>(), nullptr, false), true,
               shadow.services);
  if (const std::string ps = row[5].as<std::string>(); !ps.empty()) {
    shadow.last_property_set = PropertySetFromJson(nlohmann::json::parse(ps, nullptr, false));
  }
  return shadow;
}

}  // namespace

absl::Status PgDurableStore::WriteReported(const std::vector<DeviceShadow>& shadows) {
  if (shadows.empty()) {
    return absl::OkStatus();
  }
  nlohmann::json rows = nlohmann::json::array();
  for (const DeviceShadow& shadow : shadows) {
    rows.push_back({{"device_id", shadow.device_id},
                    {"tenant_id", shadow.tenant_id},
                    {"version", shadow.version},
                    {"reported", SideToJson(shadow.services, false)},
                    {"last_property_set", shadow.last_property_set
                                              ? PropertySetToJson(*shadow.last_property_set)
                                              : nlohmann::json()}});
  }
  const std::string batch = rows.dump();
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work w(c);
    // One statement per batch: many reports of a device were already coalesced into one row.
    w.exec_params(
        "INSERT INTO shadow.device_shadows AS s "
        "  (device_id, tenant_id, version, reported, last_property_set, updated_at) "
        "SELECT r.device_id, r.tenant_id, r.version, r.reported, r.last_property_set, now() "
        "FROM jsonb_to_recordset($1::jsonb) AS r(device_id text, tenant_id text, version bigint, "
        "  reported jsonb, last_property_set jsonb) "
        "ON CONFLICT (device_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, "
        "  version = EXCLUDED.version, reported = EXCLUDED.reported, "
        "  last_property_set = COALESCE(EXCLUDED.last_property_set, s.last_property_set), "
        "  updated_at = now() "
        "WHERE s.version <= EXCLUDED.version",
        batch);
    w.commit();
  });
}

absl::StatusOr<std::optional<DeviceShadow>> PgDurableStore::Load(const std::string& device_id) {
  return pool_->Call([&](pqxx::connection& c) -> std::optional<DeviceShadow> {
    pqxx::read_transaction r(c);
    const pqxx::result rows = r.exec_params(
        std::string("SELECT ") + kColumns + " FROM shadow.device_shadows WHERE device_id = $1",
        device_id);
    if (rows.empty()) {
      return std::nullopt;
    }
    return FromRow(rows[0]);
  });
}

absl::StatusOr<std::vector<DeviceShadow>> PgDurableStore::Scan(const std::string& after,
                                                               size_t limit) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction r(c);
    const pqxx::result rows = r.exec_params(
        std::string("SELECT ") + kColumns +
            " FROM shadow.device_shadows WHERE device_id > $1 ORDER BY device_id LIMIT $2",
        after, static_cast<int64_t>(limit));
    std::vector<DeviceShadow> out;
    out.reserve(rows.size());
    for (const pqxx::row& row : rows) {
      out.push_back(FromRow(row));
    }
    return out;
  });
}

absl::Status PgDurableStore::UpdateDesired(const std::string& device_id,
                                           const std::string& tenant_id,
                                           const DesiredApply& apply) {
  return pool_->Call([&](pqxx::connection& c) -> absl::Status {
    pqxx::work w(c);
    w.exec_params(
        "INSERT INTO shadow.device_shadows (device_id, tenant_id) VALUES ($1, $2) "
        "ON CONFLICT (device_id) DO NOTHING",
        device_id, tenant_id);
    const pqxx::result rows = w.exec_params(
        "SELECT desired::text FROM shadow.device_shadows WHERE device_id = $1 FOR UPDATE",
        device_id);
    std::map<std::string, ServiceShadow> services;
    SideFromJson(nlohmann::json::parse(rows[0][0].as<std::string>(), nullptr, false), true,
                 services);
    absl::StatusOr<int64_t> version = apply(services);
    if (!version.ok()) {
      return version.status();  // rolled back with `w`
    }
    w.exec_params(
        "UPDATE shadow.device_shadows SET desired = $2::jsonb, tenant_id = $3, "
        "  version = GREATEST(version, $4), updated_at = now() WHERE device_id = $1",
        device_id, SideToJson(services, true).dump(), tenant_id, *version);
    w.commit();
    return absl::OkStatus();
  });
}

}  // namespace iot::shadow
