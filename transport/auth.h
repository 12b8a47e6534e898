// Shared-secret proofs for the bootstrap handshake (docs/security.md):
// HMAC-SHA-256 from OpenSSL's libcrypto over both sides' fresh nonces and the
// addresses they exchange, so a proof cannot be replayed or moved to another
// connection.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

namespace rdmaps::transport {

constexpr size_t kNonceBytes = 32;
using Nonce = std::array<uint8_t, kNonceBytes>;
using Proof = std::array<uint8_t, 32>;

/// Bytes from the system's cryptographic generator; throws Error(kInternal) if it fails.
void random_bytes(void* out, size_t length);
Nonce random_nonce();
/// A fresh 256-bit secret as 64 hex digits: what local launches pass to their children.
std::string random_secret();

/// HMAC-SHA-256 keyed with `secret` over `parts`, each preceded by its length
/// (no two different lists of parts feed the same bytes).
Proof mac(std::string_view secret, std::initializer_list<std::span<const uint8_t>> parts);
/// HMAC-SHA-256 keyed with `secret` over the role tag, both nonces and the two addresses.
Proof prove(std::string_view secret, std::string_view role, const Nonce& client, const Nonce& server,
            std::span<const uint8_t> sender_address, std::span<const uint8_t> other_address);
/// Constant-time comparison.
bool same_proof(const Proof& a, const Proof& b);

/// Lower-case hex digits of `bytes`.
std::string to_hex(std::span<const uint8_t> bytes);
/// Fills `out` from exactly 2 * out.size() hex digits; false when `hex` is not that.
bool from_hex(std::string_view hex, std::span<uint8_t> out);

/// Streaming SHA-256 (libcrypto): checkpoint files carry one over their bytes.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t length);
  std::array<uint8_t, 32> finish();

 private:
  void* ctx_;  // EVP_MD_CTX
};

}  // namespace rdmaps::transport
