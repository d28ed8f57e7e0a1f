#include "api.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/sync_stream.h>
#include <grpcpp/security/credentials.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "iot/common/auth.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iotbench {
namespace {

namespace pb = iot::thing_model::v1;
using google::protobuf::Message;

constexpr auto kThingModelTimeout = std::chrono::seconds(30);

void Prepare(grpc::ClientContext& context, const std::string& api_key,
             std::chrono::milliseconds timeout) {
  iot::common::SetBearer(context, api_key);
  context.set_deadline(std::chrono::system_clock::now() + timeout);
}

std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  grpc::ChannelArguments args;
  // Several connections, so that concurrent callers are not serialised on one HTTP/2
  // connection's flow control; local subchannel pool keeps each channel's own.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

const google::protobuf::MethodDescriptor* FindMethod(const std::string& service,
                                                     const std::string& method,
                                                     absl::Status* error) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const auto* descriptor = pool->FindServiceByName(service);
  if (descriptor == nullptr) {
    *error = absl::FailedPreconditionError(
        fmt::format("service {} is not in this build's protos", service));
    return nullptr;
  }
  const auto* found = descriptor->FindMethodByName(method);
  if (found == nullptr) {
    *error = absl::FailedPreconditionError(
        fmt::format("{} has no method {} in this build's protos", service, method));
  }
  return found;
}

std::unique_ptr<Message> NewMessage(const google::protobuf::Descriptor* type) {
  return std::unique_ptr<Message>(
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(type)->New());
}

absl::StatusOr<std::unique_ptr<Message>> FromJson(const google::protobuf::Descriptor* type,
                                                  const nlohmann::json& json) {
  auto message = NewMessage(type);
  const auto status = google::protobuf::util::JsonStringToMessage(json.dump(), message.get());
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{} does not take {}: {}", type->full_name(), json.dump(), status.ToString()));
  }
  return message;
}

nlohmann::json ToJson(const Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  return nlohmann::json::parse(text, nullptr, false);
}

class GrpcStream final : public DynamicClient::Stream {
 public:
  GrpcStream(const std::shared_ptr<grpc::Channel>& channel, const std::string& path,
             const google::protobuf::MethodDescriptor* method, const std::string& api_key)
      : path_(path), method_(method) {
    iot::common::SetBearer(context_, api_key);
    stream_.reset(grpc::internal::ClientReaderWriterFactory<Message, Message>::Create(
        channel.get(),
        grpc::internal::RpcMethod(path_.c_str(), grpc::internal::RpcMethod::BIDI_STREAMING),
        &context_));
  }

  bool Write(const nlohmann::json& json) override {
    auto message = FromJson(method_->input_type(), json);
    const std::lock_guard lock(write_mutex_);
    return message.ok() && !finished_ && stream_->Write(**message);
  }

  std::optional<nlohmann::json> Read() override {
    auto message = NewMessage(method_->output_type());
    if (!stream_->Read(message.get())) {
      return std::nullopt;
    }
    return ToJson(*message);
  }

  void Cancel() override { context_.TryCancel(); }

  // gRPC's Finish() must not overlap a Write() of another thread: both take write_mutex_, and
  // nothing is written after Finish().
  absl::Status Finish() override {
    const std::lock_guard lock(write_mutex_);
    if (!finished_) {
      finished_ = true;
      final_ = FromGrpc(stream_->Finish());
    }
    return final_;
  }

  ~GrpcStream() override {
    context_.TryCancel();
    (void)Finish();
  }

 private:
  std::string path_;
  const google::protobuf::MethodDescriptor* method_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<Message, Message>> stream_;
  std::mutex write_mutex_;
  bool finished_ = false;
  absl::Status final_;
};

}  // namespace

absl::Status FromGrpc(const grpc::Status& status) {
  return {static_cast<absl::StatusCode>(static_cast<int>(status.error_code())),
          status.error_message()};
}

std::string Describe(const absl::Status& status) {
  return fmt::format("{}: {}", absl::StatusCodeToString(status.code()),
                     std::string(status.message()));
}

// ---- thing-model ----

struct ThingModelClient::Impl {
  std::string api_key;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Products::Stub> products;
  std::unique_ptr<pb::Devices::Stub> devices;

  /// CreateProduct from either source (a product model or an Alink TSL).
  absl::Status CreateProduct(const pb::CreateProductRequest& request) const {
    pb::Product response;
    grpc::ClientContext context;
    Prepare(context, api_key, kThingModelTimeout);
    return FromGrpc(products->CreateProduct(&context, request, &response));
  }
};

ThingModelClient::ThingModelClient(const std::string& address, std::string api_key)
    : impl_(std::make_unique<Impl>()) {
  impl_->api_key = std::move(api_key);
  impl_->channel = Channel(address);
  impl_->products = pb::Products::NewStub(impl_->channel);
  impl_->devices = pb::Devices::NewStub(impl_->channel);
}

ThingModelClient::~ThingModelClient() = default;

absl::Status ThingModelClient::CreateProduct(const nlohmann::json& product) {
  pb::CreateProductRequest request;
  request.set_product_json(product.dump());
  return impl_->CreateProduct(request);
}

absl::Status ThingModelClient::CreateTslProduct(const nlohmann::json& tsl) {
  pb::CreateProductRequest request;
  request.set_tsl_json(tsl.dump());
  return impl_->CreateProduct(request);
}

absl::StatusOr<std::vector<DeviceCredentials>> ThingModelClient::AddDevices(
    const std::string& product_id, const std::string& prefix, int count, int threads) {
  std::vector<DeviceCredentials> out(static_cast<std::size_t>(count));
  std::atomic<int> next{0};
  std::mutex error_mutex;
  absl::Status error;
  std::vector<std::thread> callers;
  for (int t = 0; t < std::max(1, threads); ++t) {
    callers.emplace_back([&] {
      for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
        pb::AddDeviceRequest request;
        request.set_product_id(product_id);
        request.set_node_id(fmt::format("{}{}", prefix, i + 1));
        request.set_device_name("iot-bench " + request.node_id());
        pb::AddDeviceResponse response;
        grpc::ClientContext context;
        Prepare(context, impl_->api_key, kThingModelTimeout);
        const auto status = impl_->devices->AddDevice(&context, request, &response);
        if (!status.ok()) {
          const std::lock_guard lock(error_mutex);
          error = FromGrpc(status);
          next.store(count);
          return;
        }
        out[static_cast<std::size_t>(i)] = {.device_id = response.device().device_id(),
                                            .secret = response.secret(),
                                            .product_id = product_id,
                                            .node_id = request.node_id()};
      }
    });
  }
  for (auto& caller : callers) {
    caller.join();
  }
  if (!error.ok()) {
    return error;
  }
  return out;
}

absl::Status ThingModelClient::DeleteProduct(const std::string& product_id) {
  pb::DeleteProductRequest request;
  request.set_product_id(product_id);
  request.set_force(true);
  pb::DeleteProductResponse response;
  grpc::ClientContext context;
  Prepare(context, impl_->api_key, std::chrono::seconds(120));
  return FromGrpc(impl_->products->DeleteProduct(&context, request, &response));
}

// ---- services by name ----

DynamicClient::DynamicClient(const std::string& address, std::string api_key)
    : api_key_(std::move(api_key)), channel_(Channel(address)) {}

DynamicClient::~DynamicClient() = default;

absl::Status DynamicClient::Check(const std::string& service, const std::string& method) const {
  absl::Status error;
  FindMethod(service, method, &error);
  return error;
}

absl::StatusOr<nlohmann::json> DynamicClient::Call(const std::string& service,
                                                   const std::string& method,
                                                   const nlohmann::json& request,
                                                   std::chrono::milliseconds timeout) const {
  absl::Status error;
  const auto* descriptor = FindMethod(service, method, &error);
  if (descriptor == nullptr) {
    return error;
  }
  auto message = FromJson(descriptor->input_type(), request);
  if (!message.ok()) {
    return message.status();
  }
  auto response = NewMessage(descriptor->output_type());
  const std::string path = fmt::format("/{}/{}", service, method);
  grpc::ClientContext context;
  Prepare(context, api_key_, timeout);
  const grpc::Status status =
      grpc::internal::BlockingUnaryCall<Message, Message, google::protobuf::MessageLite,
                                        google::protobuf::MessageLite>(
          channel_.get(),
          grpc::internal::RpcMethod(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC), &context,
          **message, response.get());
  if (!status.ok()) {
    return FromGrpc(status);
  }
  return ToJson(*response);
}

absl::StatusOr<std::unique_ptr<DynamicClient::Stream>> DynamicClient::OpenStream(
    const std::string& service, const std::string& method) const {
  absl::Status error;
  const auto* descriptor = FindMethod(service, method, &error);
  if (descriptor == nullptr) {
    return error;
  }
  return std::make_unique<GrpcStream>(channel_, fmt::format("/{}/{}", service, method), descriptor,
                                      api_key_);
}

}  // namespace iotbench
