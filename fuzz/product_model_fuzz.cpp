// Huawei IoTDA product-model JSON (thing-model's CreateProduct / UpdateProduct), then the
// validator compiled from an accepted model, exercised with values of every JSON type.
#include <nlohmann/json.hpp>
#include <string>

#include "fuzz_input.h"
#include "iot/thing_model/product_model.h"
#include "iot/thing_model/validator.h"

namespace tmodel = iot::thing_model;
using iot::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  tmodel::ModelDiagnostics diagnostics;
  auto model = tmodel::ParseProductModel(json, &diagnostics);
  if (!model.ok()) {
    Require(!diagnostics.errors.empty());
    return 0;
  }
  Require(diagnostics.errors.empty());
  const tmodel::Validator validator(model->model);
  static const nlohmann::json kValues[] = {nullptr,
                                           true,
                                           0,
                                           -1,
                                           1.5,
                                           1e300,
                                           "",
                                           "ON",
                                           "2026-11-26T17:42:48Z",
                                           nlohmann::json::array({1, "a"}),
                                           nlohmann::json::object({{"k", 1}})};
  size_t budget = 64;  // bound the work per input
  for (const tmodel::Service& service : model->services()) {
    nlohmann::json report_properties = nlohmann::json::object();
    for (const tmodel::Parameter& property : service.properties.items) {
      for (const nlohmann::json& value : kValues) {
        if (budget-- == 0) {
          return 0;
        }
        const nlohmann::json one = {{property.name, value}};
        (void)validator.ValidateProperties(service.service_id, one, tmodel::PropertyMode::kWrite);
        (void)validator.ValidateProperties(service.service_id, one,
                                           tmodel::PropertyMode::kFullState);
        report_properties[property.name] = value;
      }
    }
    const std::string report =
        nlohmann::json{
            {"services", {{{"service_id", service.service_id}, {"properties", report_properties}}}}}
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    (void)validator.ValidateReport(report);
    for (const tmodel::Command& command : service.commands) {
      nlohmann::json paras = nlohmann::json::object();
      for (const tmodel::Parameter& para : command.paras.items) {
        paras[para.name] = para.default_value;
      }
      (void)validator.ValidateCommand(service.service_id, command.name, paras);
    }
    for (const tmodel::Event& event : service.events) {
      (void)validator.ValidateEvent(service.service_id, event.type, nlohmann::json::object());
    }
  }
  return 0;
}
