#pragma once

// Certificates for TLS tests, made with the openssl CLI.

#include <string>

#include "iot/testing/process.h"

namespace iot::testing {

/// A CA (ca.crt, ca.key) and a server certificate for 127.0.0.1 (server.crt, server.key) in a
/// temporary directory; more certificates signed by the CA with Issue().
class TestPki {
 public:
  /// Throws std::runtime_error when openssl fails.
  TestPki();

  /// Issues `name`.crt/.key signed by the CA; returns the lowercase hex SHA-256 of its DER.
  std::string Issue(const std::string& name, const std::string& common_name,
                    const std::string& extfile = "");

  /// `file` in the directory.
  [[nodiscard]] std::string Path(const std::string& file) const;

 private:
  void Run(const std::vector<std::string>& argv);

  TempDir dir_{"iot-pki"};
};

}  // namespace iot::testing
