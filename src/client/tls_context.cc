#include "client/tls_context.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace witmq::client {

namespace ssl = boost::asio::ssl;

namespace {

// OpenSSL's reasons for the errors queued on this thread, oldest first (the queue is emptied).
std::string openssl_errors() {
  std::string out;
  std::string last;
  while (const unsigned long e = ERR_get_error()) {
    const char* r = ERR_reason_error_string(e);
    std::string reason = r ? r : fmt::format("error {:#x}", e);
    if (reason == last) continue;
    out += (out.empty() ? "" : ": ") + reason;
    last = std::move(reason);
  }
  return out.empty() ? std::string("no reason given") : out;
}

Error load_failure(std::string_view what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ERR_clear_error();
    return invalid_argument(
        fmt::format("TLS {} '{}': cannot open it: {}", what, path, std::strerror(errno)));
  }
  return invalid_argument(fmt::format("TLS {} '{}': {}", what, path, openssl_errors()));
}

}  // namespace

Result<std::shared_ptr<ssl::context>> make_client_tls_context(const TlsClientOptions& options) {
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (options.insecure) {
    SSL_CTX_set_verify(native, SSL_VERIFY_NONE, nullptr);
  } else {
    SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
    if (options.ca_file.empty()) {
      if (SSL_CTX_set_default_verify_paths(native) != 1) {
        return invalid_argument(
            fmt::format("TLS: cannot load the system's trusted CAs: {}", openssl_errors()));
      }
    } else if (SSL_CTX_load_verify_locations(native, options.ca_file.c_str(), nullptr) != 1) {
      return load_failure("CA file", options.ca_file);
    }
  }
  if (!options.cert_file.empty() || !options.key_file.empty()) {
    if (options.cert_file.empty() || options.key_file.empty()) {
      return invalid_argument(
          "TLS: a client certificate needs both a certificate file and a key file");
    }
    if (SSL_CTX_use_certificate_chain_file(native, options.cert_file.c_str()) != 1) {
      return load_failure("certificate file", options.cert_file);
    }
    if (SSL_CTX_use_PrivateKey_file(native, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return load_failure("key file", options.key_file);
    }
    if (SSL_CTX_check_private_key(native) != 1) {
      return invalid_argument(fmt::format("TLS key file '{}' does not match certificate '{}': {}",
                                          options.key_file, options.cert_file, openssl_errors()));
    }
  }
  return ctx;
}

Status prepare_client_tls(SSL* ssl, const std::string& host, const TlsClientOptions& options) {
  const std::string& name = options.server_name.empty() ? host : options.server_name;
  boost::system::error_code ec;
  boost::asio::ip::make_address(name, ec);
  const bool is_address = !ec;
  if (!is_address && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
    return invalid_argument(
        fmt::format("TLS: '{}' cannot be sent as the server name: {}", name, openssl_errors()));
  }
  if (options.insecure) return ok_status();
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const int set = is_address ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                             : X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
  if (set != 1) {
    return invalid_argument(
        fmt::format("TLS: '{}' cannot be verified as a server name: {}", name, openssl_errors()));
  }
  return ok_status();
}

std::string client_handshake_failure(SSL* ssl, const boost::system::error_code& ec) {
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    return fmt::format("the server's certificate did not verify: {}",
                       X509_verify_cert_error_string(verify));
  }
  return ec.message();
}

}  // namespace witmq::client
