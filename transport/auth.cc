#include "transport/auth.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <memory>

#include "rdmaps/error.h"

namespace rdmaps::transport {

namespace {
[[noreturn]] void fail(const char* what) {
  char buf[256];
  ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
  throw Error(Errc::kInternal, std::string(what) + ": " + buf);
}

struct MacDeleter {
  void operator()(EVP_MAC* m) const { EVP_MAC_free(m); }
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
};
}  // namespace

void random_bytes(void* out, size_t length) {
  if (RAND_bytes(static_cast<unsigned char*>(out), static_cast<int>(length)) != 1)
    fail("drawing random bytes (OpenSSL RAND_bytes)");
}

Nonce random_nonce() {
  Nonce n;
  random_bytes(n.data(), n.size());
  return n;
}

std::string random_secret() {
  uint8_t raw[32];
  random_bytes(raw, sizeof(raw));
  return to_hex(raw);
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (uint8_t b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

bool from_hex(std::string_view hex, std::span<uint8_t> out) {
  if (hex.size() != 2 * out.size()) return false;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = digit(hex[2 * i]), lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

Proof mac(std::string_view secret, std::initializer_list<std::span<const uint8_t>> parts) {
  std::unique_ptr<EVP_MAC, MacDeleter> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
  if (!mac) fail("fetching HMAC");
  std::unique_ptr<EVP_MAC_CTX, MacDeleter> ctx(EVP_MAC_CTX_new(mac.get()));
  if (!ctx) fail("creating an HMAC context");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), params) != 1)
    fail("keying HMAC-SHA-256");
  auto feed = [&](const void* data, size_t length) {
    // Length first, so that no two different inputs concatenate to the same bytes.
    const uint64_t n = length;
    if (EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(&n), sizeof(n)) != 1 ||
        EVP_MAC_update(ctx.get(), static_cast<const unsigned char*>(data), length) != 1)
      fail("computing HMAC-SHA-256");
  };
  for (const auto& part : parts) feed(part.data(), part.size());
  Proof out{};
  size_t written = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &written, out.size()) != 1 || written != out.size())
    fail("finishing HMAC-SHA-256");
  return out;
}

Proof prove(std::string_view secret, std::string_view role, const Nonce& client, const Nonce& server,
            std::span<const uint8_t> sender_address, std::span<const uint8_t> other_address) {
  const std::span<const uint8_t> role_bytes(reinterpret_cast<const uint8_t*>(role.data()), role.size());
  return mac(secret, {role_bytes, client, server, sender_address, other_address});
}

bool same_proof(const Proof& a, const Proof& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
    fail("starting a SHA-256 digest");
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::update(const void* data, size_t length) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, length) != 1) fail("SHA-256 update");
}

std::array<uint8_t, 32> Sha256::finish() {
  std::array<uint8_t, 32> out{};
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out.data(), &n) != 1 || n != out.size()) fail("SHA-256 final");
  return out;
}

}  // namespace rdmaps::transport
