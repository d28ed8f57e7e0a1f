#pragma once

// Values for simulated devices, generated from a product model (thing model): each within its
// data type's limits, so that every report validates against the model. A DeviceValues is one
// device's state, which behaves like a device's: settings keep what the platform set, identity
// properties never change, measurements drift and counters grow.

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "iot/thing_model/product_model.h"

namespace devsim {

/// IoTDA's event_time format, yyyyMMdd'T'HHmmss'Z' (UTC).
std::string IotdaTime(std::chrono::system_clock::time_point time);

/// `{device_id}_0_0_{YYYYMMDDHH}` uses this hour text (UTC).
std::string HourStamp(std::chrono::system_clock::time_point time);

/// A value of `para`'s data type within its min/max, enum_list and max_length.
nlohmann::json GenerateValue(const iot::thing_model::Parameter& para, std::mt19937_64& rng);

/// A value for every para of `paras`.
nlohmann::json GenerateParas(const iot::thing_model::ParameterList& paras, std::mt19937_64& rng);

/// How a simulated device's property changes from one report to the next.
enum class ValueKind {
  kSetting,      ///< writable (W): keeps its value until a property set changes it
  kIdentity,     ///< serial numbers, ids, versions, firmware, model names: constant
  kCounter,      ///< readable totals and counts (number): start low, never decrease
  kMeasurement,  ///< other readable numbers: a random walk with small steps within min..max
  kState,        ///< other readable values (enum, boolean, text, DateTime, ...): constant
};

/// The kind of a property: by its method, its data type and the words of its name (split at
/// `_`, `-`, digits and camelCase): id, sn, uuid, serial, firmware, fw, hardware, hw, version,
/// model, imei, imsi, iccid, mac, manufacturer, vendor make identity; total, count(s), counter,
/// uptime, cumulative, odometer make a number a counter.
ValueKind Classify(const iot::thing_model::Parameter& property);

/// The state of one simulated device: a value for every property of every service of its
/// product model, made when the device starts. Not thread-safe (one device, one thread).
class DeviceValues {
 public:
  /// `interval_property`: the name of a writable number property that tells the report
  /// interval in seconds; it starts out as `report_interval_seconds` (clamped to its range)
  /// instead of a random value, so that the device does not claim another interval. "" = none.
  DeviceValues(std::shared_ptr<const iot::thing_model::ProductModel> model,
               double report_interval_seconds, std::string_view interval_property,
               std::mt19937_64& rng);

  /// The time passes one report: measurements take a small random step (at most 1% of their
  /// range), counters grow by a small amount, the rest stays as it is.
  void Advance(std::mt19937_64& rng);

  /// The readable (R) properties of `service` with their current values; an empty object when
  /// it has none or the model has no such service.
  nlohmann::json Readable(std::string_view service_id) const;

  /// A property set: every property of `service_id` named in `properties` takes the given
  /// value and keeps it from then on (a set measurement stops drifting). Names the model does
  /// not have are ignored. Returns how many values were taken.
  std::size_t Set(std::string_view service_id, const nlohmann::json& properties);

  /// The current value of one property (null when unknown), for tests.
  nlohmann::json Get(std::string_view service_id, std::string_view property) const;

 private:
  struct Value {
    const iot::thing_model::Parameter* spec = nullptr;
    ValueKind kind = ValueKind::kState;
    nlohmann::json value;
    bool set = false;  ///< given by a property set: no longer drifts
  };

  std::shared_ptr<const iot::thing_model::ProductModel> model_;
  /// service_id -> its properties, in the model's order.
  std::map<std::string, std::vector<Value>, std::less<>> services_;
};

}  // namespace devsim
