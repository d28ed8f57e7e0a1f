#include "iot/testing/http_sink.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

namespace iot::testing {

HttpSink::HttpSink(std::function<int(int)> respond) : respond_(std::move(respond)) {
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd_, 16) != 0) {
    close(fd_);
    throw std::runtime_error("HttpSink: cannot listen on 127.0.0.1");
  }
  socklen_t len = sizeof addr;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Serve(); });
}

HttpSink::~HttpSink() {
  stop_ = true;
  thread_.join();
  close(fd_);
}

std::string HttpSink::Url() const { return fmt::format("http://127.0.0.1:{}/hook", port_); }

std::vector<HttpSink::Request> HttpSink::requests() {
  std::lock_guard lock(mu_);
  return requests_;
}

void HttpSink::Serve() {
  while (!stop_) {
    pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, 50) <= 0) {
      continue;
    }
    const int c = accept(fd_, nullptr, nullptr);
    if (c < 0) {
      continue;
    }
    ++connections_;
    Handle(c);
    close(c);
  }
}

void HttpSink::Handle(int c) {
  std::string data;
  char buf[4096];
  size_t header_end = std::string::npos;
  size_t content_length = 0;
  while (true) {
    pollfd p{.fd = c, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, 2000) <= 0) {
      return;
    }
    const ssize_t n = read(c, buf, sizeof buf);
    if (n <= 0) {
      return;
    }
    data.append(buf, static_cast<size_t>(n));
    if (header_end == std::string::npos) {
      header_end = data.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        std::string lower = data.substr(0, header_end);
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
        const size_t cl = lower.find("content-length:");
        content_length = cl == std::string::npos ? 0 : std::stoul(lower.substr(cl + 15));
      }
    }
    if (header_end != std::string::npos && data.size() >= header_end + 4 + content_length) {
      break;
    }
  }
  Request request;
  size_t pos = data.find("\r\n") + 2;
  while (pos < header_end) {
    const size_t eol = data.find("\r\n", pos);
    const std::string line = data.substr(pos, eol - pos);
    const size_t colon = line.find(':');
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    request.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
    pos = eol + 2;
  }
  request.body = data.substr(header_end + 4, content_length);
  {
    std::lock_guard lock(mu_);
    request.status = respond_(static_cast<int>(requests_.size()) + 1);
    requests_.push_back(request);
  }
  const std::string response = fmt::format(
      "HTTP/1.1 {} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", request.status);
  (void)!write(c, response.data(), response.size());
}

}  // namespace iot::testing
