#pragma once

// What the MqttConsumer tests share: a loopback listener for fake brokers and proxies, and the
// application side that records deliveries.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "iot/common/mqtt_consumer.h"

namespace iot::common::consumer_test {

/// A listening TCP socket on 127.0.0.1 and a free port; throws when that fails.
inline int ListenOnLoopback(uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      ::listen(fd, 4) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error("cannot listen on 127.0.0.1");
  }
  port = ntohs(address.sin_port);
  return fd;
}

/// What a consumer handed to the application, in order.
class Received {
 public:
  MqttConsumer::Handler Handler() {
    return [this](MqttDelivery&& delivery) {
      std::lock_guard lock(mu_);
      deliveries_.push_back(std::move(delivery));
    };
  }
  std::vector<MqttDelivery> deliveries() const {
    std::lock_guard lock(mu_);
    return deliveries_;
  }
  std::vector<std::string> payloads() const {
    std::vector<std::string> out;
    for (const auto& delivery : deliveries()) {
      out.push_back(delivery.payload);
    }
    return out;
  }
  size_t size() const { return deliveries().size(); }

 private:
  mutable std::mutex mu_;
  std::vector<MqttDelivery> deliveries_;
};

}  // namespace iot::common::consumer_test
