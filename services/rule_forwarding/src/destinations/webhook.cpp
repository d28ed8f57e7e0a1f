#include <curl/curl.h>
#include <fmt/format.h>

#include <mutex>
#include <vector>

#include "destinations/settings.h"
#include "iot/common/crypto.h"
#include "iot/common/status.h"
#include "iot/common/url.h"
#include "iot/rule_forwarding/destinations.h"

namespace iot::rule_forwarding {
namespace {

struct Target {
  std::string url;
  std::string secret;
  long timeout_ms = 5000;
};

absl::StatusOr<Target> ParseTarget(const nlohmann::json& config) {
  if (auto s = settings::CheckKeys(config, {"url", "secret", "timeout_ms"}); !s.ok()) {
    return s;
  }
  auto url = settings::String(config, "url", true);
  if (!url.ok()) {
    return url.status();
  }
  auto parsed = common::ParseUrl(*url);
  if (!parsed.ok() || (parsed->scheme != "http" && parsed->scheme != "https") ||
      parsed->host.empty()) {
    return common::InvalidField("url", "must be an http:// or https:// URL");
  }
  auto secret = settings::String(config, "secret", false);
  if (!secret.ok()) {
    return secret.status();
  }
  auto timeout = settings::Int(config, "timeout_ms", 5000, 100, 60'000);
  if (!timeout.ok()) {
    return timeout.status();
  }
  return Target{.url = *url, .secret = *secret, .timeout_ms = static_cast<long>(*timeout)};
}

size_t Discard(char* /*data*/, size_t size, size_t count, void* /*user*/) { return size * count; }

int CheckPeer(void* allow_private, char* primary_ip, char* /*local_ip*/, int /*primary_port*/,
              int /*local_port*/) {
  return *static_cast<const bool*>(allow_private) || !settings::IsPrivateAddress(primary_ip)
             ? CURL_PREREQFUNC_OK
             : CURL_PREREQFUNC_ABORT;
}

class WebhookDestination final : public Destination {
 public:
  explicit WebhookDestination(bool allow_private) : allow_private_(allow_private) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }
  ~WebhookDestination() override {
    for (CURL* curl : idle_) {
      curl_easy_cleanup(curl);
    }
  }
  WebhookDestination(const WebhookDestination&) = delete;
  WebhookDestination& operator=(const WebhookDestination&) = delete;

  [[nodiscard]] std::string_view type() const override { return "webhook"; }

  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& config) const override {
    return ParseTarget(config).status();
  }

  absl::Status Deliver(std::span<const Delivery> batch) override {
    static const nlohmann::json kEmpty = nlohmann::json::object();
    CURL* curl = Take();
    if (curl == nullptr) {
      return absl::ResourceExhaustedError("curl_easy_init failed");
    }
    absl::Status status;
    for (const Delivery& d : batch) {
      auto target = ParseTarget(d.action_config ? *d.action_config : kEmpty);
      if (!target.ok()) {
        status = absl::InvalidArgumentError(std::string(target.status().message()));
        break;
      }
      if (status = Post(curl, *target, d, allow_private_); !status.ok()) {
        break;
      }
    }
    Give(curl);
    return status;
  }

 private:
  /// A handle of the pool (kept for connection reuse), or a new one.
  CURL* Take() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        CURL* curl = idle_.back();
        idle_.pop_back();
        return curl;
      }
    }
    return curl_easy_init();
  }
  void Give(CURL* curl) {
    std::lock_guard lock(mu_);
    idle_.push_back(curl);
  }

  static absl::Status Post(CURL* curl, const Target& target, const Delivery& d,
                           const bool& allow_private) {
    curl_easy_reset(curl);
    const std::string body =
        d.payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    curl_slist* headers = nullptr;
    const auto add = [&headers](const std::string& h) {
      headers = curl_slist_append(headers, h.c_str());
    };
    add("Content-Type: application/json");
    add("X-Iot-Delivery-Id: " + d.delivery_id);
    add("X-Iot-Rule-Id: " + d.rule_id);
    if (!target.secret.empty()) {
      add("X-Iot-Signature: sha256=" + common::HmacSha256Hex(target.secret, body));
    }
    curl_easy_setopt(curl, CURLOPT_URL, target.url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, target.timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, target.timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "iot-rule-forwarding/1");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
    curl_easy_setopt(curl, CURLOPT_PREREQFUNCTION, CheckPeer);
    curl_easy_setopt(curl, CURLOPT_PREREQDATA, const_cast<bool*>(&allow_private));
    const CURLcode rc = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    const std::string where = common::MaskUrl(target.url);
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
      return absl::FailedPreconditionError(fmt::format(
          "POST {}: the address is private or loopback (IOT_RULE_FORWARDING_WEBHOOK_ALLOW_PRIVATE)",
          where));
    }
    if (rc != CURLE_OK) {
      return absl::UnavailableError(fmt::format("POST {}: {}", where, curl_easy_strerror(rc)));
    }
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
      return absl::OkStatus();
    }
    const std::string message = fmt::format("POST {}: HTTP {}", where, code);
    if (code == 408 || code == 429 || code >= 500) {
      return absl::UnavailableError(message);
    }
    return absl::FailedPreconditionError(message);
  }

  const bool allow_private_;
  std::mutex mu_;
  std::vector<CURL*> idle_;
};

}  // namespace

std::shared_ptr<Destination> MakeWebhookDestination(bool allow_private_addresses) {
  return std::make_shared<WebhookDestination>(allow_private_addresses);
}

}  // namespace iot::rule_forwarding
