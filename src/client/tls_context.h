// The client side of TLS (OpenSSL through Boost.Asio): a context from TlsClientOptions, and the
// per-connection settings that make a handshake verify the server's name.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "client/types.h"
#include "common/result.h"

typedef struct ssl_st SSL;

namespace witmq::client {

// A client context: TLS 1.2 or later; the server's certificate verified against options.ca_file
// (or the system's trusted CAs) unless options.insecure; the client certificate and key loaded
// when options.cert_file is set. Errors (kInvalidArgument) name the file and OpenSSL's reason.
Result<std::shared_ptr<boost::asio::ssl::context>> make_client_tls_context(
    const TlsClientOptions& options);

// Prepares `ssl` for a handshake with `host`: SNI (for a DNS name) and, unless
// options.insecure, the check that the certificate names `host` (a DNS name or an IP address).
Status prepare_client_tls(SSL* ssl, const std::string& host, const TlsClientOptions& options);

// Why a client handshake on `ssl` failed with `ec`: the certificate verification result when
// that is what failed, else OpenSSL's reason.
std::string client_handshake_failure(SSL* ssl, const boost::system::error_code& ec);

}  // namespace witmq::client
