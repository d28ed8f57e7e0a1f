#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "destinations/settings.h"
#include "iot/common/crypto.h"
#include "iot/common/status.h"
#include "iot/common/url.h"
#include "iot/rule_forwarding/action_secrets.h"
#include "iot/rule_forwarding/destinations.h"

namespace iot::rule_forwarding {
namespace {

struct Target {
  std::string url;
  std::string host;
  uint16_t port = 0;
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
  if (!common::IsHostName(parsed->host)) {
    return common::InvalidField("url",
                                fmt::format("'{}' is not a host name or IP address", parsed->host));
  }
  auto secret = settings::String(config, "secret", false);
  if (!secret.ok()) {
    return secret.status();
  }
  auto timeout = settings::Int(config, "timeout_ms", 5000, 100, 60'000);
  if (!timeout.ok()) {
    return timeout.status();
  }
  const uint16_t default_port = parsed->scheme == "https" ? 443 : 80;
  return Target{.url = *url,
                .host = parsed->host,
                .port = parsed->port != 0 ? parsed->port : default_port,
                .secret = *secret,
                .timeout_ms = static_cast<long>(*timeout)};
}

size_t Discard(char* /*data*/, size_t size, size_t count, void* /*user*/) { return size * count; }

/// The addresses a POST may go to: the ones the egress policy checked for its host.
struct Peer {
  const std::vector<common::IpAddress>* checked = nullptr;
  bool refused = false;
};

/// libcurl calls it once connected (or reusing a connection), before the request is sent: the
/// peer must be one of the checked addresses, whatever curl resolved or reused.
int CheckPeer(void* data, char* primary_ip, char* /*local_ip*/, int /*primary_port*/,
              int /*local_port*/) {
  auto* peer = static_cast<Peer*>(data);
  const auto ip = common::IpAddress::Parse(primary_ip == nullptr ? "" : primary_ip);
  peer->refused =
      !ip || std::find(peer->checked->begin(), peer->checked->end(), *ip) == peer->checked->end();
  return peer->refused ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

class WebhookDestination final : public Destination {
 public:
  explicit WebhookDestination(std::shared_ptr<const common::EgressPolicy> egress)
      : egress_(std::move(egress)) {
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
    auto target = ParseTarget(config);
    if (!target.ok()) {
      return target.status();
    }
    return settings::CheckDestinationHost(*egress_, target->host, "url");
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
      if (status = Post(curl, *target, d); !status.ok()) {
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

  absl::Status Post(CURL* curl, const Target& target, const Delivery& d) const {
    auto addresses = settings::ResolveDestination(*egress_, target.host);
    if (!addresses.ok()) {
      return addresses.status();
    }
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
    // Connect only to the checked addresses: curl does not resolve the name again (DNS
    // rebinding), and no proxy from the environment stands in between.
    curl_slist* pinned = nullptr;
    if (!common::IpAddress::Parse(target.host)) {
      std::string entry = fmt::format("{}:{}:", target.host, target.port);
      for (size_t i = 0; i < addresses->size(); ++i) {
        const common::IpAddress& a = (*addresses)[i];
        entry += i == 0 ? "" : ",";
        entry += a.v6 ? "[" + a.ToString() + "]" : a.ToString();
      }
      pinned = curl_slist_append(pinned, entry.c_str());
      curl_easy_setopt(curl, CURLOPT_RESOLVE, pinned);
    }
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    Peer peer{.checked = &*addresses, .refused = false};
    curl_easy_setopt(curl, CURLOPT_PREREQFUNCTION, CheckPeer);
    curl_easy_setopt(curl, CURLOPT_PREREQDATA, &peer);
    const CURLcode rc = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    curl_slist_free_all(pinned);
    const std::string where = MaskActionUrl(target.url);
    if (rc == CURLE_ABORTED_BY_CALLBACK && peer.refused) {
      return absl::PermissionDeniedError(
          fmt::format("POST {}: connected to an address that was not checked: refused", where));
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

  const std::shared_ptr<const common::EgressPolicy> egress_;
  std::mutex mu_;
  std::vector<CURL*> idle_;
};

}  // namespace

std::shared_ptr<Destination> MakeWebhookDestination(
    std::shared_ptr<const common::EgressPolicy> egress) {
  return std::make_shared<WebhookDestination>(std::move(egress));
}

}  // namespace iot::rule_forwarding
