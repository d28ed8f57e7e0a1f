#include "model_values.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

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

/// A missing limit is 100 away from the other one (0..100 when both are missing).
nlohmann::json Integer(const Parameter& para, std::int64_t low, std::int64_t high,
                       std::mt19937_64& rng) {
  std::int64_t min = para.min ? IntegerLimit(*para.min, low, high, false) : 0;
  std::int64_t max = para.max ? IntegerLimit(*para.max, low, high, true) : 100;
  if (para.min && !para.max) {
    max = min <= high - 100 ? min + 100 : high;
  } else if (!para.min && para.max) {
    min = max >= low + 100 ? max - 100 : low;
  }
  if (max < min) {
    return min;
  }
  return std::uniform_int_distribution<std::int64_t>(min, max)(rng);
}

nlohmann::json Decimal(const Parameter& para, std::mt19937_64& rng) {
  double min = para.min ? para.min->value : 0.0;
  double max = para.max ? para.max->value : 100.0;
  if (para.min && !para.max) {
    max = min + 100.0;
  } else if (!para.min && para.max) {
    min = max - 100.0;
  }
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
      return Integer(para, std::numeric_limits<std::int32_t>::min(),
                     std::numeric_limits<std::int32_t>::max(), rng);
    case DataType::kLong:
      return Integer(para, std::numeric_limits<std::int64_t>::min(),
                     std::numeric_limits<std::int64_t>::max(), rng);
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

nlohmann::json GenerateReadableProperties(const iot::thing_model::Service& service,
                                          std::mt19937_64& rng) {
  nlohmann::json properties = nlohmann::json::object();
  for (const Parameter& property : service.properties.items) {
    if ((property.method & iot::thing_model::kMethodRead) != 0) {
      properties[property.name] = GenerateValue(property, rng);
    }
  }
  return properties;
}

nlohmann::json GenerateParas(const iot::thing_model::ParameterList& paras, std::mt19937_64& rng) {
  nlohmann::json out = nlohmann::json::object();
  for (const Parameter& para : paras.items) {
    out[para.name] = GenerateValue(para, rng);
  }
  return out;
}

}  // namespace devsim
