#pragma once

// Values for simulated devices, generated from a product model (thing model): each within its
// data type's limits, so that every report validates against the model.

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "iot/thing_model/product_model.h"

namespace devsim {

/// IoTDA's event_time format, yyyyMMdd'T'HHmmss'Z' (UTC).
std::string IotdaTime(std::chrono::system_clock::time_point time);

/// `{device_id}_0_0_{YYYYMMDDHH}` uses this hour text (UTC).
std::string HourStamp(std::chrono::system_clock::time_point time);

/// A value of `para`'s data type within its min/max, enum_list and max_length.
nlohmann::json GenerateValue(const iot::thing_model::Parameter& para, std::mt19937_64& rng);

/// Every readable (R) property of `service`, each with a generated value. Empty object when the
/// service has none.
nlohmann::json GenerateReadableProperties(const iot::thing_model::Service& service,
                                          std::mt19937_64& rng);

/// A value for every para of `paras`.
nlohmann::json GenerateParas(const iot::thing_model::ParameterList& paras, std::mt19937_64& rng);

}  // namespace devsim
