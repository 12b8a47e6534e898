// The control messages that follow a handshake with a shared secret (Hello,
// Welcome, their lane versions), each sealed with an HMAC under a key of that
// connection, made from the secret and both sides' nonces, over its direction
// and its number: a relay that passed the handshake through unchanged cannot
// change, drop, reorder, replay or insert one (docs/security.md). They are
// not encrypted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "transport/auth.h"

namespace rdmaps::transport {

class ControlSeal {
 public:
  enum class Side { kClient, kServer };
  static constexpr size_t kTagBytes = sizeof(Proof);

  ControlSeal(std::string_view secret, const Nonce& client, const Nonce& server, Side side);
  /// `message` and its tag: this side's next message.
  std::vector<uint8_t> seal(std::span<const uint8_t> message);
  /// The message of the peer's next sealed one; throws Error(kPermissionDenied)
  /// naming `peer` when its tag does not hold (changed, inserted, out of order).
  std::vector<uint8_t> open(std::vector<uint8_t> sealed, const std::string& peer);

 private:
  Proof tag(std::string_view role, uint64_t number, std::span<const uint8_t> message) const;

  Proof key_;
  std::string_view mine_, theirs_;
  uint64_t sent_ = 0, received_ = 0;
};

}  // namespace rdmaps::transport
