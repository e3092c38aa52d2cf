#include "cluster/peer_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdio>
#include <cstdlib>
#include <initializer_list>

namespace witmq::cluster {

namespace {

std::string mac(std::string_view secret, std::initializer_list<std::string_view> fields) {
  std::string input;
  for (std::string_view f : fields) {
    input.push_back(static_cast<char>(f.size() >> 8));
    input.push_back(static_cast<char>(f.size() & 0xff));
    input.append(f.substr(0, 0xffff));
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), out,
           &n) == nullptr) {
    std::fputs("witmqd: HMAC-SHA256 failed in OpenSSL\n", stderr);
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(out), n);
}

}  // namespace

std::string peer_nonce() {
  unsigned char bytes[kPeerNonceBytes];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    std::fputs("witmqd: the system's random generator failed (OpenSSL RAND_bytes)\n", stderr);
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(bytes), sizeof bytes);
}

std::string dialer_proof(std::string_view secret, std::string_view cluster,
                         std::string_view dialer_id, std::string_view dialer_nonce,
                         std::string_view listener_nonce) {
  return mac(secret, {"witmq-peer-v2 dialer", cluster, dialer_id, dialer_nonce, listener_nonce});
}

std::string listener_proof(std::string_view secret, std::string_view cluster,
                           std::string_view dialer_id, std::string_view listener_id,
                           std::string_view dialer_nonce, std::string_view listener_nonce) {
  return mac(secret, {"witmq-peer-v2 listener", cluster, dialer_id, listener_id, dialer_nonce,
                      listener_nonce});
}

bool proofs_match(std::string_view received, std::string_view expected) {
  return received.size() == expected.size() &&
         CRYPTO_memcmp(received.data(), expected.data(), expected.size()) == 0;
}

}  // namespace witmq::cluster
