#include "iot/testing/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <set>
#include <sstream>

namespace iot::testing {
namespace {

bool IsNameChar(char c, bool first) {
  const bool alpha = std::isalpha(static_cast<unsigned char>(c)) != 0 || c == '_' || c == ':';
  return first ? alpha : alpha || std::isdigit(static_cast<unsigned char>(c)) != 0;
}

absl::Status LineError(size_t line_no, const std::string& why, const std::string& line) {
  return absl::InvalidArgumentError("line " + std::to_string(line_no) + ": " + why + ": " + line);
}

}  // namespace

absl::StatusOr<std::string> HttpGet(uint16_t port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return absl::UnavailableError("connect to port " + std::to_string(port) + " failed");
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("send failed");
  }
  std::string response;
  char buf[8192];
  ssize_t n = 0;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos) {
    return absl::DataLossError("no HTTP header end in response");
  }
  const std::string status_line = response.substr(0, response.find("\r\n"));
  if (status_line.find(" 200 ") == std::string::npos) {
    return absl::FailedPreconditionError("HTTP status: " + status_line);
  }
  return response.substr(header_end + 4);
}

absl::StatusOr<std::map<std::string, double>> ParsePrometheusText(const std::string& text) {
  static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                               "untyped"};
  std::map<std::string, double> series;
  std::istringstream in(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) {
      continue;
    }
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash;
      std::string keyword;
      std::string name;
      std::string type;
      words >> hash >> keyword >> name;
      if (keyword == "TYPE") {
        words >> type;
        if (kTypes.count(type) == 0) {
          return LineError(line_no, "unknown metric type", line);
        }
      }
      continue;
    }
    size_t i = 0;
    if (!IsNameChar(line[0], true)) {
      return LineError(line_no, "bad metric name", line);
    }
    while (i < line.size() && IsNameChar(line[i], i == 0)) {
      ++i;
    }
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t label_start = i;
        while (i < line.size() && IsNameChar(line[i], i == label_start)) {
          ++i;
        }
        if (i == label_start || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
          return LineError(line_no, "bad label", line);
        }
        i += 2;
        while (i < line.size() && line[i] != '"') {
          i += line[i] == '\\' ? 2U : 1U;
        }
        if (i >= line.size()) {
          return LineError(line_no, "unterminated label value", line);
        }
        ++i;
        if (i < line.size() && line[i] == ',') {
          ++i;
        }
      }
      if (i >= line.size()) {
        return LineError(line_no, "unterminated label set", line);
      }
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      return LineError(line_no, "no value", line);
    }
    const std::string key = line.substr(0, i);
    std::istringstream rest(line.substr(i + 1));
    std::string value_text;
    rest >> value_text;
    char* end = nullptr;
    const double value = std::strtod(value_text.c_str(), &end);
    const bool special = value_text == "+Inf" || value_text == "-Inf" || value_text == "NaN";
    if (!special && (value_text.empty() || *end != '\0')) {
      return LineError(line_no, "bad value", line);
    }
    series[key] = value;
  }
  if (series.empty()) {
    return absl::InvalidArgumentError("no samples");
  }
  return series;
}

double SumSeries(const std::map<std::string, double>& series, const std::string& name,
                 const std::map<std::string, std::string>& labels) {
  double sum = 0;
  for (const auto& [key, value] : series) {
    if (key.compare(0, name.size(), name) != 0 ||
        (key.size() > name.size() && key[name.size()] != '{')) {
      continue;
    }
    bool match = true;
    for (const auto& [label, label_value] : labels) {
      match = match && key.find(label + "=\"" + label_value + "\"") != std::string::npos;
    }
    if (match) {
      sum += value;
    }
  }
  return sum;
}

}  // namespace iot::testing
