#include "iot/testing/pki.h"

#include <fstream>
#include <stdexcept>
#include <vector>

#include "iot/common/crypto.h"
#include "iot/testing/platform.h"

namespace iot::testing {

TestPki::TestPki() {
  Run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", Path("ca.key"), "-out", Path("ca.crt"), "-days", "2", "-subj",
       "/CN=iot-test-ca"});
  std::ofstream(dir_.path() / "server.ext") << "subjectAltName=IP:127.0.0.1\n";
  Issue("server", "127.0.0.1", Path("server.ext"));
}

std::string TestPki::Issue(const std::string& name, const std::string& common_name,
                           const std::string& extfile) {
  Run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", Path(name + ".key"), "-out", Path(name + ".csr"), "-subj", "/CN=" + common_name});
  std::vector<std::string> sign = {"openssl",
                                   "x509",
                                   "-req",
                                   "-in",
                                   Path(name + ".csr"),
                                   "-CA",
                                   Path("ca.crt"),
                                   "-CAkey",
                                   Path("ca.key"),
                                   "-CAcreateserial",
                                   "-out",
                                   Path(name + ".crt"),
                                   "-days",
                                   "2"};
  if (!extfile.empty()) {
    sign.insert(sign.end(), {"-extfile", extfile});
  }
  Run(sign);
  Run({"openssl", "x509", "-in", Path(name + ".crt"), "-outform", "DER", "-out",
       Path(name + ".der")});
  return common::Sha256Hex(ReadTextFile(dir_.path() / (name + ".der")));
}

std::string TestPki::Path(const std::string& file) const { return (dir_.path() / file).string(); }

void TestPki::Run(const std::vector<std::string>& argv) {
  const auto log = dir_.path() / "openssl.log";
  if (RunCommand(argv, log) != 0) {
    throw std::runtime_error("openssl failed: " + ReadTextFile(log));
  }
}

}  // namespace iot::testing
