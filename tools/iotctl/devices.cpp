// Command `device`: the device registry, over iot.thing_model.v1.Devices.
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "client.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"
#include "output.h"

namespace iotctl {
namespace {

namespace pb = iot::thing_model::v1;

const std::map<std::string, pb::DeviceStatus>& Statuses() {
  static const std::map<std::string, pb::DeviceStatus> statuses = {{"online", pb::ONLINE},
                                                                   {"offline", pb::OFFLINE},
                                                                   {"inactive", pb::INACTIVE},
                                                                   {"frozen", pb::FROZEN}};
  return statuses;
}

std::string Credentials(const pb::Device& device) {
  std::string out;
  if (device.has_secret()) {
    out = "secret";
  }
  if (!device.fingerprint().empty()) {
    out += (out.empty() ? "" : " + ") + std::string("X.509 ") + device.fingerprint();
  }
  return OrDash(out);
}

void PrintDevice(const pb::Device& device) {
  Fields fields;
  fields.Add("device", device.device_id())
      .Add("node", device.node_id())
      .Add("product", device.product_id())
      .Add("name", OrDash(device.device_name()))
      .Add("description", OrDash(device.description()))
      .Add("status", pb::DeviceStatus_Name(device.status()))
      .Add("tags", FormatTags(device.tags()))
      .Add("credentials", Credentials(device))
      .Add("created", ReadableTime(device.create_time()))
      .Add("last online", ReadableTime(device.last_online_time()))
      .Add("last offline", ReadableTime(device.last_offline_time()));
  fields.Print(std::cout);
}

void Print(Client& client, const pb::Device& device) {
  if (client.json()) {
    PrintJson(device);
  } else {
    PrintDevice(device);
  }
}

void AddTags(const std::vector<std::string>& tags,
             google::protobuf::Map<std::string, std::string>* out) {
  for (const std::string& tag : tags) {
    const KeyValue kv = SplitKeyValue(tag);
    (*out)[kv.key] = kv.value;
  }
}

// ------------------------------------------------------------------------------ add

struct AddOptions {
  std::string product_id;
  std::string node_id;
  std::string device_id;
  std::string name;
  std::string description;
  std::string secret;
  std::string fingerprint;
  std::vector<std::string> tags;
  std::string save_secret;
};

void DeviceAdd(Client& client, const AddOptions& options) {
  SecretSink sink(options.save_secret);
  pb::AddDeviceRequest request;
  request.set_product_id(options.product_id);
  request.set_node_id(options.node_id);
  request.set_device_id(options.device_id);
  request.set_device_name(options.name);
  request.set_description(options.description);
  request.set_secret(options.secret);
  request.set_fingerprint(options.fingerprint);
  AddTags(options.tags, request.mutable_tags());
  auto stub = pb::Devices::NewStub(client.channel());
  auto response = client.Call<pb::AddDeviceResponse>(
      [&](auto* context, auto* out) { return stub->AddDevice(context, request, out); });

  if (client.json()) {
    if (sink.to_file() && !response.secret().empty()) {
      sink.Show("secret", response.secret());
      response.clear_secret();
    }
    PrintJson(response);
    return;
  }
  PrintDevice(response.device());
  if (!response.secret().empty()) {
    sink.Show("secret", response.secret());
  }
}

// ------------------------------------------------------------------------------ show, list

void DeviceShow(Client& client, const std::string& device_id) {
  pb::ShowDeviceRequest request;
  request.set_device_id(device_id);
  auto stub = pb::Devices::NewStub(client.channel());
  Print(client, client.Call<pb::Device>([&](auto* context, auto* out) {
    return stub->ShowDevice(context, request, out);
  }));
}

struct ListOptions {
  std::string product_id;
  std::string status;
  std::string tag;
  std::string name_prefix;
  int32_t limit = 0;
  std::string marker;
  bool all = false;
};

void DeviceList(Client& client, const ListOptions& options) {
  pb::ListDevicesRequest request;
  request.set_product_id(options.product_id);
  if (!options.status.empty()) {
    request.set_status(Statuses().at(options.status));
  }
  if (!options.tag.empty()) {
    const KeyValue tag = SplitKeyValue(options.tag);
    request.set_tag_key(tag.key);
    request.set_tag_value(tag.value);
  }
  request.set_name_prefix(options.name_prefix);
  request.set_limit(options.limit);
  request.set_marker(options.marker);
  auto stub = pb::Devices::NewStub(client.channel());
  const auto result = client.CallPages<pb::ListDevicesResponse>(
      request, options.all,
      [&](auto* context, const auto& r, auto* out) { return stub->ListDevices(context, r, out); });

  if (client.json()) {
    PrintJson(result);
    return;
  }
  if (result.devices().empty()) {
    std::cerr << "no devices\n";
  } else {
    Table table({"DEVICE_ID", "NAME", "PRODUCT_ID", "NODE_ID", "STATUS", "TAGS", "LAST_ONLINE"});
    for (const auto& d : result.devices()) {
      table.AddRow({d.device_id(), OrDash(d.device_name()), d.product_id(), d.node_id(),
                    pb::DeviceStatus_Name(d.status()), FormatTags(d.tags()),
                    ReadableTime(d.last_online_time())});
    }
    table.Print(std::cout);
  }
  if (!result.next_marker().empty()) {
    std::cerr << "more devices: --all, or --marker " << result.next_marker() << "\n";
  }
}

// ------------------------------------------------------------------------------ update

struct UpdateOptions {
  std::string device_id;
  std::string name;
  std::string description;
  std::vector<std::string> tags;
  std::vector<std::string> remove_tags;
  bool replace_tags = false;
  CLI::Option* name_option = nullptr;
  CLI::Option* description_option = nullptr;
};

void DeviceUpdate(Client& client, const UpdateOptions& options) {
  const bool tags_change =
      options.replace_tags || !options.tags.empty() || !options.remove_tags.empty();
  if (options.name_option->count() == 0 && options.description_option->count() == 0 &&
      !tags_change) {
    throw Failure(kExitUsage,
                  "nothing to update: give --name, --description, --tag, --remove-tag or "
                  "--replace-tags");
  }
  auto stub = pb::Devices::NewStub(client.channel());
  pb::UpdateDeviceRequest request;
  request.set_device_id(options.device_id);
  if (options.name_option->count() > 0) {
    request.set_device_name(options.name);
  }
  if (options.description_option->count() > 0) {
    request.set_description(options.description);
  }
  if (tags_change) {
    // The API only replaces the whole tag set: merging reads the current tags first.
    if (!options.replace_tags) {
      pb::ShowDeviceRequest show;
      show.set_device_id(options.device_id);
      const auto current = client.Call<pb::Device>(
          [&](auto* context, auto* out) { return stub->ShowDevice(context, show, out); });
      *request.mutable_tags() = current.tags();
    }
    AddTags(options.tags, request.mutable_tags());
    for (const std::string& key : options.remove_tags) {
      request.mutable_tags()->erase(key);
    }
    request.set_replace_tags(true);
  }
  Print(client, client.Call<pb::Device>([&](auto* context, auto* out) {
    return stub->UpdateDevice(context, request, out);
  }));
}

// ------------------------------------------------------------------------------ the rest

void DeviceDelete(Client& client, const std::string& device_id) {
  pb::DeleteDeviceRequest request;
  request.set_device_id(device_id);
  auto stub = pb::Devices::NewStub(client.channel());
  const auto response = client.Call<pb::DeleteDeviceResponse>(
      [&](auto* context, auto* out) { return stub->DeleteDevice(context, request, out); });
  if (client.json()) {
    PrintJson(response);
    return;
  }
  std::cout << "deleted device " << device_id << "\n";
}

void DeviceFreeze(Client& client, const std::string& device_id, bool freeze) {
  auto stub = pb::Devices::NewStub(client.channel());
  pb::Device device;
  if (freeze) {
    pb::FreezeDeviceRequest request;
    request.set_device_id(device_id);
    device = client.Call<pb::Device>(
        [&](auto* context, auto* out) { return stub->FreezeDevice(context, request, out); });
  } else {
    pb::UnfreezeDeviceRequest request;
    request.set_device_id(device_id);
    device = client.Call<pb::Device>(
        [&](auto* context, auto* out) { return stub->UnfreezeDevice(context, request, out); });
  }
  Print(client, device);
}

struct ResetSecretOptions {
  std::string device_id;
  std::string secret;
  std::string save_secret;
};

void DeviceResetSecret(Client& client, const ResetSecretOptions& options) {
  SecretSink sink(options.save_secret);
  pb::ResetDeviceSecretRequest request;
  request.set_device_id(options.device_id);
  request.set_secret(options.secret);
  auto stub = pb::Devices::NewStub(client.channel());
  auto response = client.Call<pb::ResetDeviceSecretResponse>(
      [&](auto* context, auto* out) { return stub->ResetDeviceSecret(context, request, out); });
  if (client.json()) {
    if (sink.to_file()) {
      sink.Show("secret", response.secret());
      response.clear_secret();
    }
    PrintJson(response);
    return;
  }
  std::cout << "device: " << response.device_id() << "\n";
  sink.Show("secret", response.secret());
}

// ------------------------------------------------------------------------------ registration

void AddDeviceId(CLI::App* command, std::string& device_id) {
  command->add_option("DEVICE_ID", device_id, "Device id")->required();
}

void AddDeviceAdd(CLI::App* device, Cli& cli) {
  auto add_options = std::make_shared<AddOptions>();
  CLI::App* add = device->add_subcommand("add", "Register a device (its secret is shown once)");
  add->add_option("--product", add_options->product_id, "Product id")->required();
  add->add_option("--node", add_options->node_id,
                  "Node id, unique within the product: [A-Za-z0-9_-]{1,64}; of an alink product: "
                  "the Alibaba deviceName, which may also hold '@', '.' and ':'")
      ->required();
  add->add_option("--device-id", add_options->device_id,
                  "Device id (default and for alink products always: <product>_<node>)");
  add->add_option("--name", add_options->name, "Device name");
  add->add_option("--description", add_options->description, "Description");
  add->add_option("--secret", add_options->secret,
                  "Secret, 8..32 characters (generated when absent and no --fingerprint); an "
                  "Alibaba device keeps its deviceSecret");
  add->add_option("--fingerprint", add_options->fingerprint,
                  "SHA-256 fingerprint (hex) of the device's X.509 certificate");
  add->add_option("--tag", add_options->tags, "Tag KEY=VALUE (repeatable)")
      ->check(KeyValueValidator());
  add->add_option("--save-secret", add_options->save_secret,
                  "Write the secret to this file (mode 0600) instead of printing it");
  OnRun(add, cli, [add_options](Client& client) { DeviceAdd(client, *add_options); });
}

void AddDeviceList(CLI::App* device, Cli& cli) {
  auto list_options = std::make_shared<ListOptions>();
  CLI::App* list = device->add_subcommand("list", "List devices");
  list->add_option("--product", list_options->product_id, "Only this product's devices");
  list->add_option("--status", list_options->status, "online, offline, inactive or frozen")
      ->transform(CLI::IsMember(Statuses(), CLI::ignore_case));
  list->add_option("--tag", list_options->tag, "Devices with tag KEY=VALUE (or just KEY)");
  list->add_option("--name-prefix", list_options->name_prefix, "Device name starts with this");
  list->add_option("--limit", list_options->limit, "Page size, 1..500 (server default 50)")
      ->check(CLI::Range(1, 500));
  list->add_option("--marker", list_options->marker, "Start after this page marker");
  list->add_flag("--all", list_options->all, "Follow the pages to the end");
  OnRun(list, cli, [list_options](Client& client) { DeviceList(client, *list_options); });
}

void AddDeviceUpdate(CLI::App* device, Cli& cli) {
  auto update_options = std::make_shared<UpdateOptions>();
  CLI::App* update = device->add_subcommand("update", "Change a device's name, description, tags");
  AddDeviceId(update, update_options->device_id);
  update_options->name_option = update->add_option("--name", update_options->name, "New name");
  update_options->description_option =
      update->add_option("--description", update_options->description, "New description");
  update->add_option("--tag", update_options->tags, "Set tag KEY=VALUE (repeatable)")
      ->check(KeyValueValidator());
  update->add_option("--remove-tag", update_options->remove_tags, "Remove tag KEY (repeatable)");
  update->add_flag("--replace-tags", update_options->replace_tags,
                   "The --tag options become the whole tag set (none: remove every tag)");
  OnRun(update, cli, [update_options](Client& client) { DeviceUpdate(client, *update_options); });
}

void AddDeviceResetSecret(CLI::App* device, Cli& cli) {
  auto reset_options = std::make_shared<ResetSecretOptions>();
  CLI::App* reset = device->add_subcommand(
      "reset-secret", "Give a device a new secret (shown once); its old one stops working");
  AddDeviceId(reset, reset_options->device_id);
  reset->add_option("--secret", reset_options->secret,
                    "The new secret, 8..32 characters (generated when absent)");
  reset->add_option("--save-secret", reset_options->save_secret,
                    "Write the secret to this file (mode 0600) instead of printing it");
  OnRun(reset, cli, [reset_options](Client& client) { DeviceResetSecret(client, *reset_options); });
}

void AddDeviceCommands(CLI::App& app, Cli& cli) {
  CLI::App* device = app.add_subcommand("device", "Devices");
  device->require_subcommand(1);

  AddDeviceAdd(device, cli);

  auto show_id = std::make_shared<std::string>();
  CLI::App* show = device->add_subcommand("show", "Show a device");
  AddDeviceId(show, *show_id);
  OnRun(show, cli, [show_id](Client& client) { DeviceShow(client, *show_id); });

  AddDeviceList(device, cli);

  AddDeviceUpdate(device, cli);

  auto delete_id = std::make_shared<std::string>();
  CLI::App* del = device->add_subcommand("delete", "Delete a device");
  AddDeviceId(del, *delete_id);
  OnRun(del, cli, [delete_id](Client& client) { DeviceDelete(client, *delete_id); });

  auto freeze_id = std::make_shared<std::string>();
  CLI::App* freeze = device->add_subcommand("freeze", "Freeze a device: it cannot connect");
  AddDeviceId(freeze, *freeze_id);
  OnRun(freeze, cli, [freeze_id](Client& client) { DeviceFreeze(client, *freeze_id, true); });

  auto unfreeze_id = std::make_shared<std::string>();
  CLI::App* unfreeze = device->add_subcommand("unfreeze", "Unfreeze a device");
  AddDeviceId(unfreeze, *unfreeze_id);
  OnRun(unfreeze, cli,
        [unfreeze_id](Client& client) { DeviceFreeze(client, *unfreeze_id, false); });

  AddDeviceResetSecret(device, cli);
}

}  // namespace

const GroupRegistration kDevicesRegistration(30, &AddDeviceCommands);

}  // namespace iotctl
