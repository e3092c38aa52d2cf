// Certificates for the TLS tests, made at run time with the openssl command in a temporary
// directory (removed with the object): a CA, a server certificate for localhost and 127.0.0.1
// (subject alternative names) signed by it, a client certificate signed by it, and a second CA
// with a client certificate of its own, which the first CA does not vouch for. P-256 keys, valid
// for two days.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "daemon_process.h"

namespace witmq::daemon::testing {

class TestCertificates {
 public:
  TestCertificates() : dir_(make_temp_dir("tls")) {
    ok_ = make_ca("ca", "witmq test CA") && make_ca("other-ca", "another test CA") &&
          make_leaf("server", "ca", "localhost",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                    "extendedKeyUsage=serverAuth\n") &&
          make_leaf("client", "ca", "witmq-test-client", "extendedKeyUsage=clientAuth\n") &&
          make_leaf("intruder", "other-ca", "intruder", "extendedKeyUsage=clientAuth\n");
  }
  ~TestCertificates() { std::filesystem::remove_all(dir_); }
  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;

  // False when openssl failed; the log says why.
  bool ok() const { return ok_; }
  std::string log() const { return read(dir_ + "/openssl.log"); }

  // NAME.pem and NAME.key for ca, other-ca, server, client, intruder.
  std::string pem(const std::string& name) const { return dir_ + "/" + name + ".pem"; }
  std::string key(const std::string& name) const { return dir_ + "/" + name + ".key"; }
  const std::string& dir() const { return dir_; }

  // The daemon flags of a TLS listener (and an HTTPS one) with the server certificate.
  std::vector<std::string> server_flags() const {
    return {"--tls-listen",   "127.0.0.1:0",
            "--https-listen", "127.0.0.1:0",
            "--set",          "tls-cert-file=" + pem("server"),
            "--set",          "tls-key-file=" + key("server")};
  }

 private:
  static std::string read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  bool openssl(const std::string& args) {
    const std::string command =
        "cd '" + dir_ + "' && openssl " + args + " >>openssl.log 2>&1 </dev/null";
    return std::system(command.c_str()) == 0;
  }

  bool make_ca(const std::string& name, const std::string& cn) {
    return openssl(
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "-keyout " +
        name + ".key -out " + name + ".pem -subj '/CN=" + cn +
        "' -addext basicConstraints=critical,CA:TRUE "
        "-addext keyUsage=critical,keyCertSign,cRLSign");
  }

  bool make_leaf(const std::string& name, const std::string& ca, const std::string& cn,
                 const std::string& extensions) {
    std::ofstream(dir_ + "/" + name + ".ext") << "basicConstraints=CA:FALSE\n" << extensions;
    return openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + name +
                   ".key -out " + name + ".csr -subj '/CN=" + cn + "'") &&
           openssl("x509 -req -in " + name + ".csr -CA " + ca + ".pem -CAkey " + ca +
                   ".key -set_serial " + std::to_string(++serial_) + " -days 2 -extfile " + name +
                   ".ext -out " + name + ".pem");
  }

  std::string dir_;
  int serial_ = 0;
  bool ok_ = false;
};

}  // namespace witmq::daemon::testing
