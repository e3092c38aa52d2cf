#include "net/tls.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/ssl/error.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

namespace witmq::net {

namespace ssl = boost::asio::ssl;

namespace {

// Refuses an unreadable file before OpenSSL reports it less plainly.
Status check_readable(std::string_view key, const std::string& path) {
  if (path.empty()) return invalid_argument(fmt::format("{}: no file is set", key));
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return invalid_argument(
        fmt::format("{} '{}': cannot open it: {}", key, path, std::strerror(errno)));
  }
  return ok_status();
}

Error openssl_failure(std::string_view key, const std::string& path, std::string_view what) {
  std::string reason = openssl_errors();
  if (reason.empty()) reason = "no reason given";
  return invalid_argument(fmt::format("{} '{}': {}: {}", key, path, what, reason));
}

}  // namespace

std::optional<ClientCertMode> parse_client_cert_mode(std::string_view text) {
  if (text == "none") return ClientCertMode::kNone;
  if (text == "optional") return ClientCertMode::kOptional;
  if (text == "required") return ClientCertMode::kRequired;
  return std::nullopt;
}

std::string openssl_errors() {
  std::vector<std::string> reasons;
  while (const unsigned long e = ERR_get_error()) {
    std::string reason;
    if (const char* r = ERR_reason_error_string(e)) {
      reason = r;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      reason = buf;
    }
    if (reasons.empty() || reasons.back() != reason) reasons.push_back(std::move(reason));
  }
  std::string out;
  for (const auto& r : reasons) out += (out.empty() ? "" : ": ") + r;
  return out;
}

Result<std::shared_ptr<ssl::context>> make_server_tls_context(const TlsOptions& options) {
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  // No compression (CRIME), no renegotiation by the client, the server's cipher preference.
  SSL_CTX_set_options(
      native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_min_proto_version(native, options.min_tls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
  // OpenSSL frees a connection's record buffers (about 34 KiB) whenever they are empty, so that
  // an idle TLS connection does not keep them.
  SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);

  WITMQ_RETURN_IF_ERROR(check_readable("tls-cert-file", options.cert_file));
  if (SSL_CTX_use_certificate_chain_file(native, options.cert_file.c_str()) != 1) {
    return openssl_failure("tls-cert-file", options.cert_file,
                           "cannot load a PEM certificate chain from it");
  }
  WITMQ_RETURN_IF_ERROR(check_readable("tls-key-file", options.key_file));
  const std::string mismatch =
      fmt::format("the key does not match tls-cert-file '{}'", options.cert_file);
  if (SSL_CTX_use_PrivateKey_file(native, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL checks the key against the certificate as it loads it.
    const unsigned long e = ERR_peek_last_error();
    const bool mismatched =
        ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
    return openssl_failure("tls-key-file", options.key_file,
                           mismatched ? mismatch : "cannot load a PEM private key from it");
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    return openssl_failure("tls-key-file", options.key_file, mismatch);
  }

  if (!options.client_ca_file.empty()) {
    WITMQ_RETURN_IF_ERROR(check_readable("tls-client-ca-file", options.client_ca_file));
    if (SSL_CTX_load_verify_locations(native, options.client_ca_file.c_str(), nullptr) != 1) {
      return openssl_failure("tls-client-ca-file", options.client_ca_file,
                             "cannot load PEM CA certificates from it");
    }
    // The CAs named in the certificate request, so a client with several certificates picks
    // one of them.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.client_ca_file.c_str())) {
      SSL_CTX_set_client_CA_list(native, names);
    }
    ERR_clear_error();
  }
  switch (options.client_cert) {
    case ClientCertMode::kNone:
      SSL_CTX_set_verify(native, SSL_VERIFY_NONE, nullptr);
      break;
    case ClientCertMode::kOptional:
      SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
      break;
    case ClientCertMode::kRequired:
      SSL_CTX_set_verify(native, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      break;
  }
  // TLS 1.3 session tickets would be issued after the handshake, interleaved with the protocol's
  // first reply; sessions are not resumed, so none are sent.
  SSL_CTX_set_num_tickets(native, 0);
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  return ctx;
}

std::optional<std::string> verified_peer_cn(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
  X509_NAME* subject = X509_get_subject_name(cert);
  const int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (at < 0) return std::string();
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return std::string();
  std::string cn(reinterpret_cast<const char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return cn;
}

std::string handshake_failure(SSL* ssl, const boost::system::error_code& ec) {
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    return fmt::format("certificate verify failed: {}", X509_verify_cert_error_string(verify));
  }
  if (ec == ssl::error::stream_truncated) return "the peer closed the connection during it";
  return ec.message();
}

}  // namespace witmq::net
