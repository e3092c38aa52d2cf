// TLS for the protocol and HTTP listeners (OpenSSL through Boost.Asio): the server's context
// built from the tls- configuration keys (docs/CONFIGURATION.md), and what a session learns from
// a handshake. The listeners carry the same bytes inside TLS as their plain twins do outside it.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

typedef struct ssl_st SSL;

namespace witmq::net {

// Whether the server asks for a client certificate (tls-client-cert).
enum class ClientCertMode {
  kNone,      // no certificate is asked for
  kOptional,  // asked for and verified against the client CA bundle when the client sends one
  kRequired,  // a handshake without a certificate the client CA bundle verifies fails
};

// Parses "none", "optional" or "required".
std::optional<ClientCertMode> parse_client_cert_mode(std::string_view text);

// The server side's TLS settings; each field is the configuration key named beside it.
struct TlsOptions {
  std::string cert_file;       // tls-cert-file: PEM certificate chain, the server's first
  std::string key_file;        // tls-key-file: PEM private key of that certificate
  std::string client_ca_file;  // tls-client-ca-file: PEM CAs that client certificates chain to
  ClientCertMode client_cert = ClientCertMode::kNone;  // tls-client-cert
  // tls-min-version: the oldest protocol version accepted, TLS 1.2 or 1.3.
  bool min_tls13 = false;
  // tls-handshake-timeout-ms: a connection that has not finished its handshake this long after
  // it was accepted is closed.
  std::chrono::milliseconds handshake_timeout{10'000};
};

// A server context from `options`: the certificate chain and key loaded and checked against each
// other, the client CA bundle loaded when it is set, and the verification mode and minimum
// version applied. Errors name the key, the file and OpenSSL's reason, e.g.
// "tls-key-file '/etc/witmq/key.pem': the key does not match tls-cert-file: key values mismatch".
Result<std::shared_ptr<boost::asio::ssl::context>> make_server_tls_context(
    const TlsOptions& options);

// The common name (CN) of the subject of the certificate the peer presented on `ssl`, when it
// presented one and it verified; nullopt otherwise.
std::optional<std::string> verified_peer_cn(SSL* ssl);

// OpenSSL's reasons for the errors queued on this thread, oldest first, joined with ": " (the
// queue is emptied). "" when none is queued.
std::string openssl_errors();

// Why a handshake on `ssl` failed with `ec`, in words: the certificate verification result when
// that is what failed, else OpenSSL's reason.
std::string handshake_failure(SSL* ssl, const boost::system::error_code& ec);

}  // namespace witmq::net
