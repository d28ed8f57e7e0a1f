#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace iot::testing {

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1 (a free port) that answers with the
/// status `respond` returns for the n-th request (1-based) and records every request: the
/// receiving end of webhook actions in tests.
class HttpSink {
 public:
  struct Request {
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
    int status = 0;
  };

  explicit HttpSink(std::function<int(int)> respond);
  ~HttpSink();
  HttpSink(const HttpSink&) = delete;
  HttpSink& operator=(const HttpSink&) = delete;

  [[nodiscard]] uint16_t port() const { return port_; }
  /// `http://127.0.0.1:{port}/hook`.
  [[nodiscard]] std::string Url() const;
  std::vector<Request> requests();
  /// TCP connections accepted so far (whether or not a request followed).
  [[nodiscard]] int connections() const { return connections_; }

 private:
  void Serve();
  void Handle(int c);

  std::function<int(int)> respond_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
  std::mutex mu_;
  std::vector<Request> requests_;
};

}  // namespace iot::testing
