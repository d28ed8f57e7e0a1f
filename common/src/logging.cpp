#include "iot/common/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <ctime>

#include "iot/common/url.h"

namespace iot::common {
namespace {

// Marks a payload that Log() already rendered as the inner fields of a JSON object.
constexpr char kStructuredMarker = '\x1e';
// Whether the default logger formats JSON (InitLogging); otherwise Log() writes whole objects.
std::atomic<bool> g_json_formatter{false};

void AppendEscaped(std::string_view in, spdlog::memory_buf_t& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (const char c : in) {
    switch (c) {
      case '"':
        out.append(std::string_view("\\\""));
        break;
      case '\\':
        out.append(std::string_view("\\\\"));
        break;
      case '\n':
        out.append(std::string_view("\\n"));
        break;
      case '\r':
        out.append(std::string_view("\\r"));
        break;
      case '\t':
        out.append(std::string_view("\\t"));
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          const auto u = static_cast<unsigned char>(c);
          const std::array<char, 6> esc = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 0xF]};
          out.append(esc.data(), esc.data() + esc.size());
        } else {
          out.push_back(c);
        }
    }
  }
}

class JsonFormatter final : public spdlog::formatter {
 public:
  explicit JsonFormatter(std::string service) : service_(std::move(service)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto since_epoch = msg.time.time_since_epoch();
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - secs);
    const std::time_t t = secs.count();
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::array<char, 40> ts{};
    const size_t n = std::strftime(ts.data(), ts.size(), "%Y-%m-%dT%H:%M:%S", &tm);
    dest.append(std::string_view(R"({"ts":")"));
    dest.append(ts.data(), ts.data() + n);
    const std::string frac = fmt::format(".{:03d}Z", millis.count());
    dest.append(frac.data(), frac.data() + frac.size());
    dest.append(std::string_view(R"(","level":")"));
    const auto level = spdlog::level::to_string_view(msg.level);
    dest.append(level.data(), level.data() + level.size());
    dest.append(std::string_view(R"(","service":")"));
    AppendEscaped(service_, dest);
    dest.append(std::string_view("\","));
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    if (!payload.empty() && payload.front() == kStructuredMarker) {
      dest.append(payload.data() + 1, payload.data() + payload.size());
    } else {
      dest.append(std::string_view(R"("msg":")"));
      AppendEscaped(MaskSecrets(payload), dest);
      dest.push_back('"');
    }
    dest.append(std::string_view("}\n"));
  }

  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>(service_);
  }

 private:
  std::string service_;
};

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

nlohmann::json MaskFields(const nlohmann::json& fields) {
  if (!fields.is_object()) {
    return fields;
  }
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : fields.items()) {
    if (IsSecretField(key)) {
      out[key] = "***";
    } else if (value.is_string()) {
      out[key] = MaskSecrets(value.get_ref<const std::string&>());
    } else if (value.is_object()) {
      out[key] = MaskFields(value);
    } else {
      out[key] = value;
    }
  }
  return out;
}

}  // namespace

std::string MaskSecrets(std::string_view text) {
  std::string out = text.find("://") == std::string_view::npos ? std::string(text) : MaskUrl(text);
  // "Bearer <token>" anywhere (e.g. an echoed authorization header).
  for (size_t pos = 0; (pos = out.find("Bearer ", pos)) != std::string::npos;) {
    const size_t start = pos + 7;
    size_t end = start;
    while (end < out.size() && !std::isspace(static_cast<unsigned char>(out[end])) &&
           out[end] != '"') {
      ++end;
    }
    out.replace(start, end - start, "***");
    pos = start + 3;
  }
  return out;
}

bool IsSecretField(std::string_view name) {
  const std::string n = Lower(name);
  for (const std::string_view secret : {"password", "passwd", "secret", "token", "api_key",
                                        "apikey", "authorization", "credential", "private_key"}) {
    if (n.find(secret) != std::string::npos) {
      return true;
    }
  }
  return false;
}

void Log(spdlog::level::level_enum level, std::string_view message, const nlohmann::json& fields) {
  auto logger = spdlog::default_logger_raw();
  if (!logger->should_log(level)) {
    return;
  }
  nlohmann::json line = MaskFields(fields);
  line["msg"] = MaskSecrets(message);
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (!g_json_formatter.load(std::memory_order_relaxed)) {
    logger->log(level, std::string_view(text));
    return;
  }
  // Keep the object's inner members: the formatter writes the braces and the fixed fields.
  text.front() = kStructuredMarker;
  text.pop_back();
  logger->log(level, std::string_view(text));
}

std::unique_ptr<spdlog::formatter> MakeJsonFormatter(std::string service) {
  g_json_formatter = true;
  return std::make_unique<JsonFormatter>(std::move(service));
}

void InitLogging(const std::string& service, const std::string& level) {
  auto logger =
      std::make_shared<spdlog::logger>(service, std::make_shared<spdlog::sinks::stdout_sink_mt>());
  logger->set_formatter(MakeJsonFormatter(service));
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace iot::common
