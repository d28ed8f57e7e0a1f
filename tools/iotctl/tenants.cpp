// Commands `tenant` and `key`: tenants (root tenant's admins only) and the caller tenant's API
// keys, over iot.thing_model.v1.Tenants.
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "cli.h"
#include "client.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"
#include "output.h"

namespace iotctl {
namespace {

namespace pb = iot::thing_model::v1;

const std::map<std::string, pb::Role>& Roles() {
  static const std::map<std::string, pb::Role> roles = {
      {"reader", pb::ROLE_READER}, {"operator", pb::ROLE_OPERATOR}, {"admin", pb::ROLE_ADMIN}};
  return roles;
}

std::string RoleName(pb::Role role) {
  switch (role) {
    case pb::ROLE_READER:
      return "reader";
    case pb::ROLE_OPERATOR:
      return "operator";
    case pb::ROLE_ADMIN:
      return "admin";
    case pb::ROLE_SERVICE:
      return "service";
    default:
      return pb::Role_Name(role);
  }
}

void AddKeyFields(Fields& fields, const pb::ApiKey& key) {
  fields.Add("key id", key.key_id())
      .Add("name", OrDash(key.name()))
      .Add("role", RoleName(key.role()))
      .Add("prefix", OrDash(key.prefix()))
      .Add("tenant", key.tenant_id())
      .Add("created", ReadableTime(key.create_time()));
  if (!key.revoke_time().empty()) {
    fields.Add("revoked", ReadableTime(key.revoke_time()));
  }
}

// ------------------------------------------------------------------------------ tenant create

struct TenantCreateOptions {
  std::string name;
  std::string tenant_id;
  bool with_admin_key = false;
  std::string save_secret;
};

void TenantCreate(Client& client, const TenantCreateOptions& options) {
  SecretSink sink(options.save_secret);
  pb::CreateTenantRequest request;
  request.set_name(options.name);
  request.set_tenant_id(options.tenant_id);
  request.set_create_admin_key(options.with_admin_key);
  auto stub = pb::Tenants::NewStub(client.channel());
  auto response = client.Call<pb::CreateTenantResponse>(
      [&](auto* context, auto* out) { return stub->CreateTenant(context, request, out); });

  if (client.json()) {
    if (sink.to_file() && !response.admin_key_secret().empty()) {
      sink.Show("admin key", response.admin_key_secret());
      response.clear_admin_key_secret();
    }
    PrintJson(response);
    return;
  }
  Fields fields;
  fields.Add("tenant", response.tenant().tenant_id())
      .Add("name", response.tenant().name())
      .Add("created", ReadableTime(response.tenant().create_time()));
  if (response.has_admin_key()) {
    fields.Add("admin key id", response.admin_key().key_id())
        .Add("admin key prefix", OrDash(response.admin_key().prefix()));
  }
  fields.Print(std::cout);
  if (!response.admin_key_secret().empty()) {
    sink.Show("admin key", response.admin_key_secret());
  }
}

// ------------------------------------------------------------------------------ key commands

struct KeyCreateOptions {
  std::string name;
  std::string role;
  std::string save_secret;
};

void KeyCreate(Client& client, const KeyCreateOptions& options) {
  SecretSink sink(options.save_secret);
  pb::CreateApiKeyRequest request;
  request.set_name(options.name);
  request.set_role(Roles().at(options.role));
  auto stub = pb::Tenants::NewStub(client.channel());
  auto response = client.Call<pb::CreateApiKeyResponse>(
      [&](auto* context, auto* out) { return stub->CreateApiKey(context, request, out); });

  if (client.json()) {
    if (sink.to_file()) {
      sink.Show("key", response.secret());
      response.clear_secret();
    }
    PrintJson(response);
    return;
  }
  Fields fields;
  AddKeyFields(fields, response.key());
  fields.Print(std::cout);
  sink.Show("key", response.secret());
}

void KeyList(Client& client, bool include_revoked) {
  auto stub = pb::Tenants::NewStub(client.channel());
  pb::ListApiKeysRequest request;
  request.set_limit(500);
  request.set_include_revoked(include_revoked);
  const auto all = client.CallPages<pb::ListApiKeysResponse>(
      request, /*all=*/true,
      [&](auto* context, const auto& r, auto* out) { return stub->ListApiKeys(context, r, out); });

  if (client.json()) {
    PrintJson(all);
    return;
  }
  if (all.keys().empty()) {
    std::cerr << "no API keys\n";
    return;
  }
  Table table({"KEY_ID", "NAME", "ROLE", "PREFIX", "CREATED", "REVOKED"});
  for (const auto& key : all.keys()) {
    table.AddRow({key.key_id(), OrDash(key.name()), RoleName(key.role()), OrDash(key.prefix()),
                  ReadableTime(key.create_time()), ReadableTime(key.revoke_time())});
  }
  table.Print(std::cout);
}

void KeyRevoke(Client& client, const std::string& key_id) {
  pb::RevokeApiKeyRequest request;
  request.set_key_id(key_id);
  auto stub = pb::Tenants::NewStub(client.channel());
  auto response = client.Call<pb::RevokeApiKeyResponse>(
      [&](auto* context, auto* out) { return stub->RevokeApiKey(context, request, out); });
  if (client.json()) {
    PrintJson(response);
    return;
  }
  Fields fields;
  AddKeyFields(fields, response.key());
  fields.Print(std::cout);
}

// ------------------------------------------------------------------------------ registration

void AddTenantCommands(CLI::App& app, Cli& cli) {
  CLI::App* tenant = app.add_subcommand("tenant", "Tenants (admins of the root tenant only)");
  tenant->require_subcommand(1);

  auto create = std::make_shared<TenantCreateOptions>();
  CLI::App* create_cmd = tenant->add_subcommand("create", "Create a tenant");
  create_cmd->add_option("--name", create->name, "Display name")->required();
  create_cmd->add_option("--tenant-id", create->tenant_id,
                         "Tenant id, [a-z0-9_-]{1,64} (generated when absent)");
  auto* with_key =
      create_cmd->add_flag("--with-admin-key", create->with_admin_key,
                           "Also create the tenant's first admin key and print it (shown once)");
  create_cmd
      ->add_option("--save-secret", create->save_secret,
                   "Write the admin key to this file (mode 0600) instead of printing it")
      ->needs(with_key);
  OnRun(create_cmd, cli, [create](Client& client) { TenantCreate(client, *create); });
}

void AddKeyCommands(CLI::App& app, Cli& cli) {
  CLI::App* key = app.add_subcommand("key", "API keys of the caller's tenant (admins only)");
  key->require_subcommand(1);

  auto create = std::make_shared<KeyCreateOptions>();
  CLI::App* create_cmd = key->add_subcommand("create", "Create an API key (shown once)");
  create_cmd->add_option("--name", create->name, "Name of the key")->required();
  create_cmd->add_option("--role", create->role, "reader, operator or admin")
      ->required()
      ->transform(CLI::IsMember(Roles(), CLI::ignore_case));
  create_cmd->add_option("--save-secret", create->save_secret,
                         "Write the key to this file (mode 0600) instead of printing it");
  OnRun(create_cmd, cli, [create](Client& client) { KeyCreate(client, *create); });

  auto include_revoked = std::make_shared<bool>(false);
  CLI::App* list_cmd = key->add_subcommand("list", "List the tenant's API keys");
  list_cmd->add_flag("--include-revoked", *include_revoked, "Also list revoked keys");
  OnRun(list_cmd, cli, [include_revoked](Client& client) { KeyList(client, *include_revoked); });

  auto key_id = std::make_shared<std::string>();
  CLI::App* revoke_cmd = key->add_subcommand("revoke", "Revoke an API key");
  revoke_cmd->add_option("KEY_ID", *key_id, "Key id (from `key list`)")->required();
  OnRun(revoke_cmd, cli, [key_id](Client& client) { KeyRevoke(client, *key_id); });
}

void AddCommands(CLI::App& app, Cli& cli) {
  AddTenantCommands(app, cli);
  AddKeyCommands(app, cli);
}

}  // namespace

const GroupRegistration kTenantsRegistration(10, &AddCommands);

}  // namespace iotctl
