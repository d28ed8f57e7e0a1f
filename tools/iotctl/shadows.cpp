// Command `shadow`: device shadows, over iot.shadow.v1.Shadows. The shadow service listens on
// its own port: `iotctl --addr 127.0.0.1:50054 shadow ...` (or IOTCTL_ADDR).
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "client.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"
#include "output.h"

namespace iotctl {
namespace {

namespace pb = iot::shadow::v1;

void PrintShadow(Client& client, const pb::ShowDeviceShadowResponse& shadow) {
  if (client.json()) {
    PrintJson(shadow);
    return;
  }
  Fields fields;
  fields.Add("device", shadow.device_id()).Add("version", std::to_string(shadow.version()));
  if (shadow.has_last_property_set()) {
    const pb::PropertySetRecord& set = shadow.last_property_set();
    fields.Add("last property set", set.request_id() + ": " + std::to_string(set.result_code()) +
                                        " " + set.result_desc() + " at " +
                                        ReadableTime(set.receive_time()));
  }
  fields.Print(std::cout);
  std::cout << "\n";
  Table table({"SERVICE", "DESIRED", "REPORTED", "DELTA", "REPORTED AT"});
  for (const pb::DeviceShadowData& data : shadow.shadow()) {
    table.AddRow({data.service_id(), data.desired().properties_json(),
                  data.reported().properties_json(), data.delta_json(),
                  OrDash(data.reported().event_time())});
  }
  table.Print(std::cout);
}

struct ShowOptions {
  std::string device_id;
  std::string service_id;
};

void ShadowShow(Client& client, const ShowOptions& options) {
  auto stub = pb::Shadows::NewStub(client.channel());
  pb::ShowDeviceShadowRequest request;
  request.set_device_id(options.device_id);
  request.set_service_id(options.service_id);
  PrintShadow(client, client.Call<pb::ShowDeviceShadowResponse>([&](auto* context, auto* out) {
    return stub->ShowDeviceShadow(context, request, out);
  }));
}

struct SetDesiredOptions {
  std::string device_id;
  std::string service_id;
  std::vector<std::string> properties;  // name=value
  std::string file;
  std::optional<int64_t> version;
};

/// `name=value` pairs: the value as JSON when it parses (60, true, null, "x"), else as a string.
nlohmann::json DesiredOf(const SetDesiredOptions& options) {
  nlohmann::json desired = nlohmann::json::object();
  if (!options.file.empty()) {
    desired = nlohmann::json::parse(ReadInput(options.file), nullptr, false);
    if (!desired.is_object()) {
      throw Failure(kExitUsage, options.file + ": expected a JSON object of desired properties");
    }
  }
  for (const std::string& property : options.properties) {
    const KeyValue kv = SplitKeyValue(property);
    nlohmann::json value = nlohmann::json::parse(kv.value, nullptr, false);
    desired[kv.key] = value.is_discarded() ? nlohmann::json(kv.value) : std::move(value);
  }
  if (desired.empty()) {
    throw Failure(kExitUsage, "give desired properties with -p NAME=VALUE or -f FILE");
  }
  return desired;
}

void ShadowSetDesired(Client& client, const SetDesiredOptions& options) {
  pb::UpdateDeviceShadowDesiredDataRequest request;
  request.set_device_id(options.device_id);
  pb::UpdateDesireData* entry = request.add_shadow();
  entry->set_service_id(options.service_id);
  entry->set_desired_json(DesiredOf(options).dump());
  if (options.version) {
    entry->set_version(*options.version);
  }
  auto stub = pb::Shadows::NewStub(client.channel());
  PrintShadow(client, client.Call<pb::ShowDeviceShadowResponse>([&](auto* context, auto* out) {
    return stub->UpdateDeviceShadowDesiredData(context, request, out);
  }));
}

void AddShadowCommands(CLI::App& app, Cli& cli) {
  CLI::App* shadow = app.add_subcommand(
      "shadow", "Device shadows: desired / reported / delta (--addr host:50054)");
  shadow->require_subcommand(1);

  auto show_options = std::make_shared<ShowOptions>();
  CLI::App* show = shadow->add_subcommand("show", "Show a device's shadow");
  show->add_option("DEVICE_ID", show_options->device_id, "Device id")->required();
  show->add_option("--service", show_options->service_id, "Only this service");
  OnRun(show, cli, [show_options](Client& client) { ShadowShow(client, *show_options); });

  auto set_options = std::make_shared<SetDesiredOptions>();
  CLI::App* set = shadow->add_subcommand(
      "set-desired", "Set desired properties of one service (pushed to the device if online)");
  set->add_option("DEVICE_ID", set_options->device_id, "Device id")->required();
  set->add_option("--service", set_options->service_id, "Service id")->required();
  set->add_option("-p,--property", set_options->properties,
                  "NAME=VALUE, VALUE as JSON (60, true, \"ON\") or plain text; NAME=null removes")
      ->check(KeyValueValidator());
  set->add_option("-f,--file", set_options->file, "Desired properties as a JSON object (- stdin)");
  set->add_option("--version", set_options->version,
                  "Expected shadow version: fails (exit 1, ABORTED) if it changed");
  OnRun(set, cli, [set_options](Client& client) { ShadowSetDesired(client, *set_options); });
}

}  // namespace

const GroupRegistration kShadowsRegistration(45, &AddShadowCommands);

}  // namespace iotctl
