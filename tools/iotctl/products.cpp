// Command `product`: products and their thing models — Huawei IoTDA product models or Alibaba
// TSLs (dialect alink) — over iot.thing_model.v1.Products.
#include <iostream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli.h"
#include "client.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"
#include "output.h"

namespace iotctl {
namespace {

namespace pb = iot::thing_model::v1;

size_t CountOf(const nlohmann::ordered_json& service, const char* field) {
  auto it = service.find(field);
  return it != service.end() && it->is_array() ? it->size() : 0;
}

void PrintProduct(const pb::Product& product) {
  Fields fields;
  fields.Add("product", product.product_id())
      .Add("dialect", OrDash(product.dialect()))
      .Add("name", product.name())
      .Add("device type", OrDash(product.device_type()))
      .Add("protocol", OrDash(product.protocol_type()))
      .Add("data format", OrDash(product.data_format()))
      .Add("manufacturer", OrDash(product.manufacturer_name()))
      .Add("industry", OrDash(product.industry()))
      .Add("description", OrDash(product.description()))
      .Add("model version", std::to_string(product.model_version()))
      .Add("devices", std::to_string(product.device_count()))
      .Add("created", ReadableTime(product.create_time()))
      .Add("updated", ReadableTime(product.update_time()));
  fields.Print(std::cout);

  // A summary of the model; `product show --model` prints all of it.
  const auto model = nlohmann::ordered_json::parse(product.product_json(), nullptr, false);
  if (model.is_discarded() || !model.contains("service_capabilities") ||
      !model["service_capabilities"].is_array()) {
    return;
  }
  Table services({"SERVICE_ID", "PROPERTIES", "COMMANDS", "EVENTS"});
  for (const auto& service : model["service_capabilities"]) {
    if (!service.is_object()) {
      continue;
    }
    services.AddRow({service.value("service_id", std::string("-")),
                     std::to_string(CountOf(service, "properties")),
                     std::to_string(CountOf(service, "commands")),
                     std::to_string(CountOf(service, "events"))});
  }
  std::cout << "\n";
  services.Print(std::cout);
}

void Print(Client& client, const pb::Product& product) {
  if (client.json()) {
    PrintJson(product);
  } else {
    PrintProduct(product);
  }
}

/// True for an Alibaba TSL: a JSON object with a `profile` or a top-level `properties`,
/// `services` or `events` array, and no Huawei `service_capabilities`.
bool LooksLikeTsl(const std::string& text) {
  const auto doc = nlohmann::json::parse(text, nullptr, false);
  if (!doc.is_object() || doc.contains("service_capabilities")) {
    return false;
  }
  if (doc.contains("profile")) {
    return true;
  }
  for (const char* key : {"properties", "services", "events"}) {
    auto it = doc.find(key);
    if (it != doc.end() && it->is_array()) {
      return true;
    }
  }
  return false;
}

/// A model file: the document and whether it is sent as a TSL (--tsl, or detected).
struct ModelInput {
  std::string text;
  bool tsl = false;
};

ModelInput ReadModel(const std::string& file, bool force_tsl) {
  ModelInput input{.text = ReadInput(file), .tsl = force_tsl};
  input.tsl = input.tsl || LooksLikeTsl(input.text);
  return input;
}

void AddModelOptions(CLI::App* command, std::string& file, bool& tsl, const char* what) {
  command
      ->add_option("-f,--file", file,
                   std::string(what) +
                       ": Huawei IoTDA product JSON or an Alibaba TSL (detected: a JSON object "
                       "with profile or properties/services/events arrays and no "
                       "service_capabilities), - for stdin")
      ->required();
  command->add_flag("--tsl", tsl, "The file is an Alibaba TSL (dialect alink), whatever it holds");
}

// ------------------------------------------------------------------------------ commands

struct CreateOptions {
  std::string file;
  bool tsl = false;
};

void ProductCreate(Client& client, const CreateOptions& options) {
  pb::CreateProductRequest request;
  ModelInput input = ReadModel(options.file, options.tsl);
  if (input.tsl) {
    request.set_tsl_json(std::move(input.text));
  } else {
    request.set_product_json(std::move(input.text));
  }
  auto stub = pb::Products::NewStub(client.channel());
  Print(client, client.Call<pb::Product>([&](auto* context, auto* out) {
    return stub->CreateProduct(context, request, out);
  }));
}

struct UpdateOptions {
  std::string product_id;
  std::string file;
  bool tsl = false;
};

void ProductUpdate(Client& client, const UpdateOptions& options) {
  pb::UpdateProductRequest request;
  request.set_product_id(options.product_id);
  ModelInput input = ReadModel(options.file, options.tsl);
  if (input.tsl) {
    request.set_tsl_json(std::move(input.text));
  } else {
    request.set_product_json(std::move(input.text));
  }
  auto stub = pb::Products::NewStub(client.channel());
  Print(client, client.Call<pb::Product>([&](auto* context, auto* out) {
    return stub->UpdateProduct(context, request, out);
  }));
}

struct ShowOptions {
  std::string product_id;
  int32_t model_version = 0;
  bool model = false;
  bool tsl = false;
};

/// `text` indented when it is JSON (keys in their imported order), else as it is.
void PrintDocument(const std::string& text) {
  const auto doc = nlohmann::ordered_json::parse(text, nullptr, false);
  std::cout << (doc.is_discarded() ? text : doc.dump(2)) << "\n";
}

void ProductShow(Client& client, const ShowOptions& options) {
  pb::ShowProductRequest request;
  request.set_product_id(options.product_id);
  request.set_model_version(options.model_version);
  auto stub = pb::Products::NewStub(client.channel());
  const auto product = client.Call<pb::Product>(
      [&](auto* context, auto* out) { return stub->ShowProduct(context, request, out); });
  if (options.tsl) {
    if (product.tsl_json().empty()) {
      throw Failure(kExitUsage,
                    "product " + options.product_id +
                        " is a huawei product: it has no TSL (--model shows its model)");
    }
    PrintDocument(product.tsl_json());
    return;
  }
  if (options.model) {
    PrintDocument(product.product_json());
    return;
  }
  Print(client, product);
}

struct ListOptions {
  std::string name;
  std::string device_type;
  int32_t limit = 0;
  std::string marker;
  bool all = false;
};

void ProductList(Client& client, const ListOptions& options) {
  pb::ListProductsRequest request;
  request.set_name(options.name);
  request.set_device_type(options.device_type);
  request.set_limit(options.limit);
  request.set_marker(options.marker);
  auto stub = pb::Products::NewStub(client.channel());
  const auto result = client.CallPages<pb::ListProductsResponse>(
      request, options.all,
      [&](auto* context, const auto& r, auto* out) { return stub->ListProducts(context, r, out); });

  if (client.json()) {
    PrintJson(result);
    return;
  }
  if (result.products().empty()) {
    std::cerr << "no products\n";
  } else {
    Table table({"PRODUCT_ID", "NAME", "DIALECT", "DEVICE_TYPE", "PROTOCOL", "VERSION", "DEVICES",
                 "UPDATED"});
    for (const auto& p : result.products()) {
      table.AddRow({p.product_id(), p.name(), OrDash(p.dialect()), OrDash(p.device_type()),
                    OrDash(p.protocol_type()), std::to_string(p.model_version()),
                    std::to_string(p.device_count()), ReadableTime(p.update_time())});
    }
    table.Print(std::cout);
  }
  if (!result.next_marker().empty()) {
    std::cerr << "more products: --all, or --marker " << result.next_marker() << "\n";
  }
}

void ProductVersions(Client& client, const std::string& product_id) {
  pb::ListProductModelVersionsRequest request;
  request.set_product_id(product_id);
  auto stub = pb::Products::NewStub(client.channel());
  const auto response =
      client.Call<pb::ListProductModelVersionsResponse>([&](auto* context, auto* out) {
        return stub->ListProductModelVersions(context, request, out);
      });
  if (client.json()) {
    PrintJson(response);
    return;
  }
  Table table({"VERSION", "CREATED"});
  for (const auto& version : response.versions()) {
    table.AddRow({std::to_string(version.model_version()), ReadableTime(version.create_time())});
  }
  table.Print(std::cout);
}

struct DeleteOptions {
  std::string product_id;
  bool force = false;
};

void ProductDelete(Client& client, const DeleteOptions& options) {
  pb::DeleteProductRequest request;
  request.set_product_id(options.product_id);
  request.set_force(options.force);
  auto stub = pb::Products::NewStub(client.channel());
  const auto response = client.Call<pb::DeleteProductResponse>(
      [&](auto* context, auto* out) { return stub->DeleteProduct(context, request, out); });
  if (client.json()) {
    PrintJson(response);
    return;
  }
  std::cout << "deleted product " << options.product_id << " and " << response.deleted_devices()
            << " device(s)\n";
}

// ------------------------------------------------------------------------------ registration

void AddProductCommands(CLI::App& app, Cli& cli) {
  CLI::App* product = app.add_subcommand("product", "Products and their thing models");
  product->require_subcommand(1);

  auto create_options = std::make_shared<CreateOptions>();
  CLI::App* create = product->add_subcommand(
      "create",
      "Create a product from Huawei product JSON or an Alibaba TSL (dialect alink: product id = "
      "the TSL's productKey); the id is generated when absent");
  AddModelOptions(create, create_options->file, create_options->tsl, "The product");
  OnRun(create, cli, [create_options](Client& client) { ProductCreate(client, *create_options); });

  auto update_options = std::make_shared<UpdateOptions>();
  CLI::App* update = product->add_subcommand(
      "update", "Replace a product's JSON (a new model version when services change)");
  update->add_option("PRODUCT_ID", update_options->product_id, "Product id")->required();
  AddModelOptions(update, update_options->file, update_options->tsl,
                  "The whole new product (an alink product takes a TSL)");
  OnRun(update, cli, [update_options](Client& client) { ProductUpdate(client, *update_options); });

  auto show_options = std::make_shared<ShowOptions>();
  CLI::App* show = product->add_subcommand("show", "Show a product");
  show->add_option("PRODUCT_ID", show_options->product_id, "Product id")->required();
  show->add_option("--model-version", show_options->model_version,
                   "That model version instead of the current one")
      ->check(CLI::Range(1, std::numeric_limits<int32_t>::max()));
  show->add_flag("--model", show_options->model,
                 "Print only the product JSON (the model; of an alink product: derived from its "
                 "TSL)");
  show->add_flag("--tsl", show_options->tsl, "Print only the TSL of an alink product, as imported")
      ->excludes("--model");
  OnRun(show, cli, [show_options](Client& client) { ProductShow(client, *show_options); });

  auto list_options = std::make_shared<ListOptions>();
  CLI::App* list = product->add_subcommand("list", "List products");
  list->add_option("--name", list_options->name, "Name contains this (case-insensitive)");
  list->add_option("--device-type", list_options->device_type, "Exact device type");
  list->add_option("--limit", list_options->limit, "Page size, 1..500 (server default 50)")
      ->check(CLI::Range(1, 500));
  list->add_option("--marker", list_options->marker, "Start after this page marker");
  list->add_flag("--all", list_options->all, "Follow the pages to the end");
  OnRun(list, cli, [list_options](Client& client) { ProductList(client, *list_options); });

  auto versions_id = std::make_shared<std::string>();
  CLI::App* versions = product->add_subcommand("versions", "List a product's model versions");
  versions->add_option("PRODUCT_ID", *versions_id, "Product id")->required();
  OnRun(versions, cli, [versions_id](Client& client) { ProductVersions(client, *versions_id); });

  auto delete_options = std::make_shared<DeleteOptions>();
  CLI::App* del = product->add_subcommand("delete", "Delete a product");
  del->add_option("PRODUCT_ID", delete_options->product_id, "Product id")->required();
  del->add_flag("--force", delete_options->force, "Also delete its devices");
  OnRun(del, cli, [delete_options](Client& client) { ProductDelete(client, *delete_options); });
}

}  // namespace

const GroupRegistration kProductsRegistration(20, &AddProductCommands);

}  // namespace iotctl
