// Alibaba TSL JSON (thing-model's CreateProduct / UpdateProduct with tsl_json): a TSL that is
// accepted converts to a Huawei-form model the product-model parser accepts, whose validator
// then runs on values of every JSON type; a refused one names its first error's path.
#include <nlohmann/json.hpp>
#include <string>

#include "fuzz_input.h"
#include "iot/common/status.h"
#include "iot/thing_model/alink_tsl.h"
#include "iot/thing_model/product_model.h"
#include "iot/thing_model/validator.h"

namespace tmodel = iot::thing_model;
using iot::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  tmodel::ModelDiagnostics diagnostics;
  auto tsl = tmodel::ConvertTsl(json, &diagnostics);
  if (!tsl.ok()) {
    Require(!diagnostics.errors.empty());
    Require(iot::common::FieldOf(tsl.status()) == diagnostics.errors.front().path);
    return 0;
  }
  Require(diagnostics.errors.empty());
  Require(tsl->product_key.empty() || tmodel::IsValidProductKey(tsl->product_key));
  nlohmann::json model = tsl->model;
  model["product_id"] = "a1Fuzz00000";
  model["name"] = "fuzz";
  tmodel::ModelDiagnostics derived_diagnostics;
  auto derived = tmodel::ParseProductModel(model.dump(), &derived_diagnostics);
  if (!derived.ok()) {
    // Only the Huawei model's own caps (services, items per service, bytes) may refuse it.
    for (const tmodel::ModelIssue& issue : derived_diagnostics.errors) {
      Require(issue.message.find("too many") != std::string::npos ||
              issue.message.find("too large") != std::string::npos);
    }
    return 0;
  }
  const tmodel::Service* fallback = derived->FindService("default");
  Require(fallback != nullptr);
  const tmodel::Validator validator(derived->model);
  static const nlohmann::json kValues[] = {nullptr,
                                           true,
                                           0,
                                           -1,
                                           1.5,
                                           "",
                                           "1700000000000",
                                           nlohmann::json::array({1, "a"}),
                                           nlohmann::json::object({{"k", 1}})};
  size_t budget = 64;  // bound the work per input
  for (const tmodel::Service& service : derived->services()) {
    for (const tmodel::Parameter& property : service.properties.items) {
      for (const nlohmann::json& value : kValues) {
        if (budget-- == 0) {
          return 0;
        }
        (void)validator.ValidateProperties(service.service_id, {{property.name, value}},
                                           tmodel::PropertyMode::kReport);
      }
    }
  }
  return 0;
}
