// Huawei IoTDA uplink payloads through the gateway's processor, against the smart-meter product
// model. Input: one byte choosing the topic kind, then request id '\n' payload. Every output
// must survive protobuf serialization (valid UTF-8 in string fields): what the owners receive.
#include <prometheus/registry.h>

#include <fstream>
#include <sstream>
#include <string>

#include "fuzz_input.h"
#include "iot/common/logging.h"
#include "iot/device_gateway/processor.h"
#include "iot/thing_model/product_model.h"

namespace gw = iot::device_gateway;
using iot::fuzz::Require;

namespace {

struct Setup {
  prometheus::Registry registry;
  gw::GatewayMetrics metrics{registry};
  gw::UplinkProcessor processor{metrics};
  gw::DeviceInfo device;

  Setup() {
    iot::common::InitLogging("fuzz", "off");
    std::ifstream in(IOT_FUZZ_PRODUCT_MODEL);
    std::stringstream text;
    text << in.rdbuf();
    auto model = iot::thing_model::ParseProductModel(text.str());
    Require(model.ok());
    device = {.device_id = "smartmeter01_meter-1",
              .tenant_id = "default",
              .product_id = "smartmeter01",
              .node_id = "meter-1",
              .dialect = {},
              .model_version = 1,
              .validator = std::make_shared<iot::thing_model::Validator>(model->model)};
  }
};

template <typename Message>
void RequireRoundTrip(const Message& message) {
  Message copy;
  Require(copy.ParseFromString(message.SerializeAsString()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Setup* setup = new Setup();
  if (size == 0) {
    return 0;
  }
  constexpr gw::UplinkKind kKinds[] = {gw::UplinkKind::kPropertiesReport,
                                       gw::UplinkKind::kGatewayPropertiesReport,
                                       gw::UplinkKind::kMessageUp,
                                       gw::UplinkKind::kEventUp,
                                       gw::UplinkKind::kCommandResponse,
                                       gw::UplinkKind::kPropertiesSetResponse,
                                       gw::UplinkKind::kPropertiesGetResponse,
                                       gw::UplinkKind::kShadowGet,
                                       gw::UplinkKind::kCustom};
  const gw::UplinkKind kind = kKinds[data[0] % std::size(kKinds)];
  iot::fuzz::Fields fields(data + 1, size - 1);
  // A request id as it arrives in a topic: printable ASCII (the broker refuses invalid UTF-8
  // in topic names, and '/' would end the level).
  std::string request_id;
  for (char c : fields.Next()) {
    if (c > ' ' && c < 0x7F && c != '/' && c != '+' && c != '#') {
      request_id += c;
    }
  }
  (void)gw::ParseDeviceTime(request_id);

  gw::UplinkMessage message{.message_id = "fuzz-1",
                            .kind = kind,
                            .device_id = setup->device.device_id,
                            .topic = "$oc/devices/smartmeter01_meter-1/sys/fuzz",
                            .request_id = request_id,
                            .payload = std::string(fields.Rest()),
                            .received_at_unix_ms = 1'790'000'000'000};
  gw::Outputs out;
  setup->processor.Process(setup->device, message, out);
  RequireRoundTrip(out.shadow_reports);
  RequireRoundTrip(out.responses);
  RequireRoundTrip(out.records);
  for (const auto& r : out.shadow_set_results) {
    RequireRoundTrip(r);
  }
  for (const auto& g : out.shadow_gets) {
    RequireRoundTrip(g);
  }
  return 0;
}
