#include "iot/common/url.h"

#include <fmt/format.h>

#include <charconv>

#include "iot/common/crypto.h"

namespace iot::common {
namespace {

absl::StatusOr<std::string> PercentDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size() || HexDigitValue(in[i + 1]) < 0 || HexDigitValue(in[i + 2]) < 0) {
      return absl::InvalidArgumentError("bad percent-encoding in URL");
    }
    out.push_back(static_cast<char>(HexDigitValue(in[i + 1]) * 16 + HexDigitValue(in[i + 2])));
    i += 2;
  }
  return out;
}

}  // namespace

absl::StatusOr<Url> ParseUrl(std::string_view text, uint16_t default_port) {
  Url url;
  const size_t scheme_end = text.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0) {
    return absl::InvalidArgumentError(fmt::format("URL '{}' has no scheme://", MaskUrl(text)));
  }
  url.scheme = std::string(text.substr(0, scheme_end));
  std::string_view rest = text.substr(scheme_end + 3);

  if (const size_t q = rest.find('?'); q != std::string_view::npos) {
    url.query = std::string(rest.substr(q + 1));
    rest = rest.substr(0, q);
  }
  std::string_view authority = rest;
  if (const size_t slash = rest.find('/'); slash != std::string_view::npos) {
    url.path = std::string(rest.substr(slash + 1));
    authority = rest.substr(0, slash);
  }
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    std::string_view user = userinfo;
    if (const size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
      user = userinfo.substr(0, colon);
      auto password = PercentDecode(userinfo.substr(colon + 1));
      if (!password.ok()) {
        return password.status();
      }
      url.password = *std::move(password);
    }
    auto decoded = PercentDecode(user);
    if (!decoded.ok()) {
      return decoded.status();
    }
    url.user = *std::move(decoded);
  }
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {  // [ipv6]:port
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError("URL has an unterminated [IPv6] host");
    }
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') {
      port = authority.substr(close + 2);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(fmt::format("URL '{}' has no host", MaskUrl(text)));
  }
  url.host = std::string(host);
  url.port = default_port;
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535) {
      return absl::InvalidArgumentError(
          fmt::format("URL '{}' has a bad port '{}'", MaskUrl(text), port));
    }
    url.port = static_cast<uint16_t>(value);
  }
  return url;
}

std::string MaskUrl(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t scheme = text.find("://", pos);
    if (scheme == std::string_view::npos) {
      break;
    }
    const size_t start = scheme + 3;
    size_t end = start;
    while (end < text.size() && text[end] != '/' && text[end] != ' ' && text[end] != '"' &&
           text[end] != '?') {
      ++end;
    }
    const std::string_view authority = text.substr(start, end - start);
    const size_t at = authority.rfind('@');
    const size_t colon = authority.find(':');
    out.append(text.substr(pos, start - pos));
    if (at != std::string_view::npos && colon != std::string_view::npos && colon < at) {
      out.append(authority.substr(0, colon + 1)).append("***").append(authority.substr(at));
    } else {
      out.append(authority);
    }
    pos = end;
  }
  out.append(text.substr(pos));
  return out;
}

}  // namespace iot::common
