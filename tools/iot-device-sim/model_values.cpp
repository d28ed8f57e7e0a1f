#include "model_values.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

namespace devsim {
namespace {

using iot::thing_model::DataType;
using iot::thing_model::Parameter;

/// The limit as an integer inside [low, high] (a fractional limit rounded inwards).
std::int64_t IntegerLimit(const iot::thing_model::NumericLimit& limit, std::int64_t low,
                          std::int64_t high, bool is_max) {
  if (limit.integer) {
    return std::clamp(*limit.integer, low, high);
  }
  const double value = is_max ? std::floor(limit.value) : std::ceil(limit.value);
  if (value <= static_cast<double>(low)) {
    return low;
  }
  if (value >= static_cast<double>(high)) {
    return high;
  }
  return static_cast<std::int64_t>(value);
}

/// The limits of an int or long: min..max inside the type's range, a missing limit 100 away
/// from the other one (0..100 when both are missing); max < min when the model's are crossed.
std::pair<std::int64_t, std::int64_t> IntegerRange(const Parameter& para) {
  const bool is_int = para.type == DataType::kInt;
  const std::int64_t low =
      is_int ? std::numeric_limits<std::int32_t>::min() : std::numeric_limits<std::int64_t>::min();
  const std::int64_t high =
      is_int ? std::numeric_limits<std::int32_t>::max() : std::numeric_limits<std::int64_t>::max();
  std::int64_t min = para.min ? IntegerLimit(*para.min, low, high, false) : 0;
  std::int64_t max = para.max ? IntegerLimit(*para.max, low, high, true) : 100;
  if (para.min && !para.max) {
    max = min <= high - 100 ? min + 100 : high;
  } else if (!para.min && para.max) {
    min = max >= low + 100 ? max - 100 : low;
  }
  return {min, max};
}

nlohmann::json Integer(const Parameter& para, std::mt19937_64& rng) {
  const auto [min, max] = IntegerRange(para);
  if (max < min) {
    return min;
  }
  return std::uniform_int_distribution<std::int64_t>(min, max)(rng);
}

bool IsInteger(DataType type) { return type == DataType::kInt || type == DataType::kLong; }

/// The range of a number property as doubles: IntegerRange, or for a decimal min..max with a
/// missing limit 100 away from the other one. Never max < min.
std::pair<double, double> Range(const Parameter& para) {
  if (IsInteger(para.type)) {
    const auto [min, max] = IntegerRange(para);
    return {static_cast<double>(min), static_cast<double>(std::max(min, max))};
  }
  double min = para.min ? para.min->value : 0.0;
  double max = para.max ? para.max->value : 100.0;
  if (para.min && !para.max) {
    max = min + 100.0;
  } else if (!para.min && para.max) {
    min = max - 100.0;
  }
  return {min, std::max(min, max)};
}

/// `value` as the property's JSON number: an integer for int/long, otherwise rounded to its
/// step (two decimals without one); always inside [min, max].
nlohmann::json Number(const Parameter& para, double value, double min, double max) {
  value = std::clamp(value, min, max);
  if (IsInteger(para.type)) {
    // Inwards: a rounded value stays inside the (integer) limits; 2^63 itself does not fit.
    const double rounded = std::clamp(std::round(value), std::ceil(min), std::floor(max));
    constexpr double kTwoTo63 = 9223372036854775808.0;
    if (rounded >= kTwoTo63) {
      return std::numeric_limits<std::int64_t>::max();
    }
    return static_cast<std::int64_t>(rounded);
  }
  const double step = para.step && para.step->value > 0 ? para.step->value : 0.01;
  const double rounded = min + std::round((value - min) / step) * step;
  // Two decimals read better than 230.39999999999998.
  return std::clamp(std::round(rounded * 100.0) / 100.0, min, max);
}

nlohmann::json Decimal(const Parameter& para, std::mt19937_64& rng) {
  const auto [min, max] = Range(para);
  if (!(max > min)) {
    return min;
  }
  const double raw = std::uniform_real_distribution<double>(min, max)(rng);
  // Two decimals read better; stay inside the limits after rounding.
  const double rounded = std::round(raw * 100.0) / 100.0;
  return std::clamp(rounded, min, max);
}

std::string RandomText(std::size_t length, std::mt19937_64& rng) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::uniform_int_distribution<std::size_t> pick(0, sizeof(kAlphabet) - 2);
  std::string text;
  text.reserve(length);
  for (std::size_t i = 0; i < length; ++i) {
    text.push_back(kAlphabet[pick(rng)]);
  }
  return text;
}

nlohmann::json FromEnum(const Parameter& para, std::mt19937_64& rng) {
  if (para.enum_list.empty()) {
    return std::string();
  }
  std::uniform_int_distribution<std::size_t> pick(0, para.enum_list.size() - 1);
  return para.enum_list[pick(rng)];
}

}  // namespace

std::string IotdaTime(std::chrono::system_clock::time_point time) {
  const auto seconds = std::chrono::floor<std::chrono::seconds>(time);
  const auto days = std::chrono::floor<std::chrono::days>(seconds);
  const std::chrono::year_month_day date{days};
  const std::chrono::hh_mm_ss<std::chrono::seconds> clock{seconds - days};
  return fmt::format("{:04}{:02}{:02}T{:02}{:02}{:02}Z", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                     clock.hours().count(), clock.minutes().count(), clock.seconds().count());
}

std::string HourStamp(std::chrono::system_clock::time_point time) {
  const auto hours = std::chrono::floor<std::chrono::hours>(time);
  const auto days = std::chrono::floor<std::chrono::days>(hours);
  const std::chrono::year_month_day date{days};
  return fmt::format("{:04}{:02}{:02}{:02}", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                     (hours - days).count());
}

nlohmann::json GenerateValue(const Parameter& para, std::mt19937_64& rng) {
  switch (para.type) {
    case DataType::kInt:
    case DataType::kLong:
      return Integer(para, rng);
    case DataType::kDecimal:
      return Decimal(para, rng);
    case DataType::kString: {
      if (!para.enum_list.empty()) {
        return FromEnum(para, rng);
      }
      const std::int64_t max_length = para.max_length.value_or(16);
      const auto length = static_cast<std::size_t>(std::clamp<std::int64_t>(max_length, 0, 16));
      return RandomText(length, rng);
    }
    case DataType::kDateTime:
      return IotdaTime(std::chrono::system_clock::now());
    case DataType::kJsonObject:
      return nlohmann::json::object();
    case DataType::kEnum:
      return FromEnum(para, rng);
    case DataType::kBoolean:
      return std::bernoulli_distribution(0.5)(rng);
    case DataType::kStringList:
      return nlohmann::json::array();
  }
  return nullptr;
}

nlohmann::json GenerateParas(const iot::thing_model::ParameterList& paras, std::mt19937_64& rng) {
  nlohmann::json out = nlohmann::json::object();
  for (const Parameter& para : paras.items) {
    out[para.name] = GenerateValue(para, rng);
  }
  return out;
}

namespace {

/// The words of a property name, lower case: split at non-letters and at camelCase humps
/// ("hwVersion" -> hw, version; "total_energy" -> total, energy).
std::vector<std::string> Words(std::string_view name) {
  std::vector<std::string> words;
  std::string word;
  char previous = 0;
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    const bool hump =
        std::isupper(u) != 0 && std::islower(static_cast<unsigned char>(previous)) != 0;
    if (std::isalpha(u) == 0 || hump) {
      if (!word.empty()) {
        words.push_back(std::move(word));
        word.clear();
      }
    }
    if (std::isalpha(u) != 0) {
      word.push_back(static_cast<char>(std::tolower(u)));
    }
    previous = c;
  }
  if (!word.empty()) {
    words.push_back(std::move(word));
  }
  return words;
}

template <std::size_t N>
bool AnyWordIn(const std::vector<std::string>& words, const std::array<std::string_view, N>& set) {
  return std::any_of(words.begin(), words.end(), [&](const std::string& word) {
    return std::find(set.begin(), set.end(), word) != set.end();
  });
}

bool IsNumber(DataType type) { return IsInteger(type) || type == DataType::kDecimal; }

/// Where a value starts: measurements in the middle fifth of their range, counters in its
/// lowest hundredth, settings at the model's default (or the report interval), the rest
/// anywhere the model allows.
nlohmann::json Initial(const Parameter& property, ValueKind kind, double report_interval_seconds,
                       bool is_interval, std::mt19937_64& rng) {
  if (IsNumber(property.type) &&
      (kind == ValueKind::kMeasurement || kind == ValueKind::kCounter || is_interval)) {
    const auto [min, max] = Range(property);
    const double span = max - min;
    if (is_interval) {
      return Number(property, report_interval_seconds, min, max);
    }
    const double low = kind == ValueKind::kCounter ? min : min + 0.4 * span;
    const double high = kind == ValueKind::kCounter ? min + 0.01 * span : min + 0.6 * span;
    return Number(property, std::uniform_real_distribution<double>(low, high)(rng), min, max);
  }
  if (kind == ValueKind::kSetting && !property.default_value.is_null()) {
    return property.default_value;
  }
  return GenerateValue(property, rng);
}

}  // namespace

ValueKind Classify(const Parameter& property) {
  if (property.Writable()) {
    return ValueKind::kSetting;
  }
  const std::vector<std::string> words = Words(property.name);
  static constexpr std::array<std::string_view, 16> kIdentityWords = {
      "id",      "sn",    "uuid", "serial", "firmware", "fw",  "hardware",     "hw",
      "version", "model", "imei", "imsi",   "iccid",    "mac", "manufacturer", "vendor"};
  if (AnyWordIn(words, kIdentityWords)) {
    return ValueKind::kIdentity;
  }
  if (!IsNumber(property.type)) {
    return ValueKind::kState;
  }
  static constexpr std::array<std::string_view, 7> kCounterWords = {
      "total", "count", "counts", "counter", "uptime", "cumulative", "odometer"};
  if (AnyWordIn(words, kCounterWords)) {
    return ValueKind::kCounter;
  }
  return ValueKind::kMeasurement;
}

DeviceValues::DeviceValues(std::shared_ptr<const iot::thing_model::ProductModel> model,
                           double report_interval_seconds, std::string_view interval_property,
                           std::mt19937_64& rng)
    : model_(std::move(model)) {
  for (const auto& service : model_->services()) {
    auto& values = services_[service.service_id];
    values.reserve(service.properties.items.size());
    for (const Parameter& property : service.properties.items) {
      const ValueKind kind = Classify(property);
      const bool is_interval = !interval_property.empty() && property.name == interval_property &&
                               IsNumber(property.type);
      values.push_back(
          Value{.spec = &property,
                .kind = kind,
                .value = Initial(property, kind, report_interval_seconds, is_interval, rng),
                .set = false});
    }
  }
}

void DeviceValues::Advance(std::mt19937_64& rng) {
  for (auto& [service_id, values] : services_) {
    for (Value& v : values) {
      if (v.set || !v.value.is_number() ||
          (v.kind != ValueKind::kMeasurement && v.kind != ValueKind::kCounter)) {
        continue;
      }
      const auto [min, max] = Range(*v.spec);
      const double span = max - min;
      const double now = v.value.get<double>();
      double next = now;
      if (v.kind == ValueKind::kMeasurement) {
        // A normal step of 0.5% of the range (capped at 1%), reflected at the limits.
        const double step = std::clamp(std::normal_distribution<double>(0.0, 0.005 * span)(rng),
                                       -0.01 * span, 0.01 * span);
        next = now + step;
        if (next > max) {
          next = max - (next - max);
        } else if (next < min) {
          next = min + (min - next);
        }
      } else {
        // Counters grow by up to a hundred-millionth of their range (at least up to one unit
        // of an integer, 0.01 of a decimal) and stop at max.
        if (IsInteger(v.spec->type)) {
          const double most = std::max(1.0, std::floor(span * 1e-8));
          next = now + std::floor(std::uniform_real_distribution<double>(0.0, most + 1.0)(rng));
        } else {
          next =
              now + std::uniform_real_distribution<double>(0.0, std::max(0.01, span * 1e-8))(rng);
        }
      }
      nlohmann::json value = Number(*v.spec, next, min, max);
      // Rounding must not take a counter back.
      if (v.kind == ValueKind::kCounter && value.get<double>() < now) {
        continue;
      }
      v.value = std::move(value);
    }
  }
}

nlohmann::json DeviceValues::Readable(std::string_view service_id) const {
  nlohmann::json properties = nlohmann::json::object();
  const auto it = services_.find(service_id);
  if (it == services_.end()) {
    return properties;
  }
  for (const Value& v : it->second) {
    if ((v.spec->method & iot::thing_model::kMethodRead) != 0) {
      properties[v.spec->name] = v.value;
    }
  }
  return properties;
}

std::size_t DeviceValues::Set(std::string_view service_id, const nlohmann::json& properties) {
  const auto it = services_.find(service_id);
  if (it == services_.end() || !properties.is_object()) {
    return 0;
  }
  std::size_t taken = 0;
  for (Value& v : it->second) {
    const auto given = properties.find(v.spec->name);
    if (given != properties.end()) {
      v.value = *given;
      v.set = true;
      ++taken;
    }
  }
  return taken;
}

nlohmann::json DeviceValues::Get(std::string_view service_id, std::string_view property) const {
  const auto it = services_.find(service_id);
  if (it != services_.end()) {
    for (const Value& v : it->second) {
      if (v.spec->name == property) {
        return v.value;
      }
    }
  }
  return nullptr;
}

}  // namespace devsim
