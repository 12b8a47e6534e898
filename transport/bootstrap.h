// The bootstrap handshake over a TCP socket: it proves the shared secret both
// ways before any byte a peer sent reaches UCX or sizes an allocation
// (docs/security.md). Four length-prefixed messages:
//   client -> server  Open    magic, version, flags (kHasSecret), client nonce
//   server -> client  Open    magic, version, flags (kHasSecret: required), server nonce
//   client -> server  Proven  HMAC("client", nonces, client address), client address
//   server -> client  Answer  ok: HMAC("server", nonces, server address, client address),
//                             server address; refused: the reason
// Without a secret on either side (--insecure) the proofs are zero and unchecked.
// With one, the control messages that follow are sealed (ControlSeal).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rdmaps/error.h"
#include "transport/auth.h"
#include "transport/control_seal.h"
#include "transport/tcp_socket.h"

namespace rdmaps::transport::bootstrap {

using Deadline = std::chrono::steady_clock::time_point;

constexpr uint32_t kMagic = 0x52444d54;  // "RDMT"
constexpr uint32_t kVersion = 3;         // 3: control messages sealed
constexpr uint32_t kHasSecret = 1;
/// Largest worker address accepted (UCX's are hundreds of bytes to a few KiB).
constexpr size_t kMaxAddress = 64 * 1024;
constexpr size_t kMaxReason = 1024;

struct Open {
  uint32_t flags = 0;
  Nonce nonce{};
};
struct Proven {
  Proof proof{};
  std::vector<uint8_t> address;
};
struct Answer {
  bool ok = false;
  Proof proof{};
  std::vector<uint8_t> address;         ///< ok
  Errc code = Errc::kPermissionDenied;  ///< refused: what kind of failure, as the server saw it
  std::string reason;                   ///< refused
};

std::vector<uint8_t> encode(const Open& m);
std::vector<uint8_t> encode(const Proven& m);
std::vector<uint8_t> encode(const Answer& m);
/// Each throws Error(kProtocol) naming `peer` on bytes that are not that
/// message; parse_open throws kUnsupported on an opening of another version
/// (no retry passes that: a reconnecting worker stops at it).
Open parse_open(std::span<const uint8_t> bytes, const std::string& peer);
Proven parse_proven(std::span<const uint8_t> bytes, const std::string& peer);
Answer parse_answer(std::span<const uint8_t> bytes, const std::string& peer);

/// A peer that has not begun to answer by `at` is told to `say` (once); the
/// handshake still waits for its deadline.
struct QuietPeer {
  Deadline at = Deadline::max();
  std::function<void()> say;
};

/// A handshake's outcome for the client: the server's worker address, and
/// the seal of the control messages that follow (none without a secret).
struct Established {
  std::vector<uint8_t> address;
  std::optional<ControlSeal> seal;
};

/// Client side, blocking until `deadline`: returns once the server proved the
/// secret. Throws Error(kPermissionDenied) when the two sides disagree on the
/// secret, kUnsupported on a peer of another transport version, kProtocol on
/// a peer that is not rdmaps.
Established client_handshake(const TcpSocket& socket, std::span<const uint8_t> my_address, std::string_view secret,
                             Deadline deadline, const std::string& peer, const QuietPeer& quiet = {});

/// Server side of one handshake, advanced as bytes arrive, never waiting.
class ServerHandshake {
 public:
  ServerHandshake(TcpSocket socket, std::string peer, std::string_view secret, Deadline deadline);
  /// Reads what has arrived; true once the client proved the secret (see
  /// client_address()). Throws Error naming the peer when it cannot complete.
  bool advance();
  /// The client's worker address, from an authenticated peer; sized, not parsed.
  std::span<const uint8_t> client_address() const { return client_address_; }
  /// Sends this side's address and proof; the socket then belongs to the caller.
  TcpSocket accept(std::span<const uint8_t> my_address);
  /// The seal of the control messages after an accepted handshake (none without a secret).
  std::optional<ControlSeal> seal() const;
  /// Tells the client why (best effort); the connection is then closed.
  void refuse(Errc code, const std::string& reason);

  bool ready() const { return stage_ == Stage::kReady; }
  /// The client's opening arrived and was answered: it is under way.
  bool opened() const { return stage_ != Stage::kOpen; }
  int fd() const { return socket_.fd(); }
  Deadline deadline() const { return deadline_; }
  const std::string& peer() const { return peer_; }

 private:
  enum class Stage { kOpen, kProven, kReady };
  TcpSocket socket_;
  std::string peer_;
  std::string secret_;
  Deadline deadline_;
  Stage stage_ = Stage::kOpen;
  MessageReader reader_;
  Nonce client_nonce_{}, server_nonce_{};
  std::vector<uint8_t> client_address_;
};

}  // namespace rdmaps::transport::bootstrap
