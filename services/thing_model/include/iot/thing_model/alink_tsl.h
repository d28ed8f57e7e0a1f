#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "iot/thing_model/product_model.h"

/// Alibaba Cloud IoT's thing specification language (TSL) turned into the Huawei-form product
/// model the validators, shadow, commands and rules run on (issue 17, docs/alink.md): products
/// of the "alink" dialect keep their TSL as imported and are served by the model derived here.
namespace iot::thing_model {

/// A TSL converted to the Huawei form.
struct TslModel {
  /// `profile.productKey`: [A-Za-z0-9]{1,32}; empty when the TSL has none.
  std::string product_key;
  /// `profile.productName` when the TSL has one (Alibaba's exports do not), else empty.
  std::string product_name;
  /// The Huawei-form product model, without product_id and name (the caller sets them):
  /// - the default function block becomes service `default` (always present), a custom block's
  ///   identifiers `{fb}:{id}` service `{fb}` with property / command / event name `{id}`;
  /// - properties: int→int, float/double→decimal, text→string (length→max_length),
  ///   date→string (milliseconds as a string), bool→boolean, enum→int (enum_list = its keys,
  ///   min/max = the smallest and largest key), struct→jsonObject, array→string list (text
  ///   items) or jsonObject; min/max/step/unit kept; accessMode r→R, rw→RW; `alink_type` keeps
  ///   the TSL's type; Alibaba's `required` (a category's standard property) is not a presence
  ///   requirement and is not carried over;
  /// - services except the implicit set/get → commands (inputData→paras, outputData→one
  ///   response's paras), `call_type` "sync" | "async" (async when absent);
  /// - events except the implicit post → events (outputData→paras), `event_level` = type.
  nlohmann::json model;
};

/// Longest product key, in characters.
inline constexpr std::size_t kMaxProductKeyLength = 32;

/// True for [A-Za-z0-9]{1,32}.
bool IsValidProductKey(std::string_view product_key);

/// Parses and checks a TSL document and converts it. Same limits as product models
/// (kMaxModelBytes, kMaxModelDepth). On failure: INVALID_ARGUMENT naming the first error's JSON
/// path in the TSL (`properties[2].dataType.specs.min`), every error in `diagnostics` when
/// given. Never throws.
absl::StatusOr<TslModel> ConvertTsl(std::string_view tsl_json,
                                    ModelDiagnostics* diagnostics = nullptr);

}  // namespace iot::thing_model
