// The peer link's handshake proofs (docs/CLUSTERING.md, "The peer link"): both sides prove that
// they hold the cluster's secret (cluster-peer-token) without sending it. Each side sends a fresh
// random nonce; the dialer answers with HMAC-SHA256 over both nonces, the cluster's name and its
// own id, and only then does the listener name itself and answer with its own HMAC, which also
// covers its id. A proof is good for one connection only (both nonces are in it), a dialer's
// proof never passes for a listener's (each starts with its own label), and an eavesdropper
// learns nothing that lets it connect or answer.
#pragma once

#include <string>
#include <string_view>

namespace witmq::cluster {

// Bytes of the nonce each side sends; a hello's nonce of another size is refused.
inline constexpr size_t kPeerNonceBytes = 32;

// kPeerNonceBytes from the system's cryptographic generator (OpenSSL RAND_bytes). Aborts when
// that generator fails: a predictable nonce would make every proof replayable.
std::string peer_nonce();

// HMAC-SHA256(secret, "witmq-peer-v2 dialer" | cluster | dialer id | dialer nonce | listener
// nonce), each field length-prefixed so that no two inputs share an encoding. 32 bytes.
std::string dialer_proof(std::string_view secret, std::string_view cluster,
                         std::string_view dialer_id, std::string_view dialer_nonce,
                         std::string_view listener_nonce);
// The same with the label "witmq-peer-v2 listener" and the listener's id after the dialer's.
std::string listener_proof(std::string_view secret, std::string_view cluster,
                           std::string_view dialer_id, std::string_view listener_id,
                           std::string_view dialer_nonce, std::string_view listener_nonce);

// Whether a received proof equals the expected one, in time independent of their content.
bool proofs_match(std::string_view received, std::string_view expected);

}  // namespace witmq::cluster
