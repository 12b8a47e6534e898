// The bootstrap connection: a TCP socket that carries the handshake (worker
// addresses, versions) and set-up control messages, every wait bounded.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "transport/address.h"

namespace rdmaps::transport {

/// What a connect does where nobody listens (ECONNREFUSED): fail at once, or
/// try again until its deadline (a worker started before its server).
enum class IfRefused { kFail, kRetry };

/// When a silent connection is probed and given up: first probe after `idle`,
/// then `count` probes `interval` apart, about `silence` in all (every probe
/// at least 1 s apart). The bootstrap sockets and UCX's tcp connections share it.
struct KeepaliveSchedule {
  std::chrono::milliseconds idle, interval;
  int count = 4;
  static KeepaliveSchedule of(std::chrono::milliseconds silence) {
    const std::chrono::milliseconds interval = std::max(silence / 8, std::chrono::milliseconds(1000));
    return {std::max(silence - 4 * interval, std::chrono::milliseconds(1000)), interval};
  }
};

class TcpSocket {
 public:
  using Deadline = std::chrono::steady_clock::time_point;
  TcpSocket() = default;
  explicit TcpSocket(int fd) : fd_(fd) {}
  TcpSocket(TcpSocket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  TcpSocket& operator=(TcpSocket&& other) noexcept;
  TcpSocket(const TcpSocket&) = delete;
  TcpSocket& operator=(const TcpSocket&) = delete;
  ~TcpSocket();

  /// Bound, listening socket; port 0 picks a free port (see local_address()).
  /// A port in use is an invalid argument, its message ending with
  /// `in_use_hint` (where the port was fixed by agreement, 0 is no advice).
  static TcpSocket listen(const SockAddr& address,
                          const std::string& in_use_hint = "pick another port, or 0 for any free one");
  /// Connects within the deadline; ECONNREFUSED etc. become Error(kUnreachable).
  /// With IfRefused::kRetry a refused connection is tried again, backing off
  /// to 0.5 s, until the deadline (a warning after 3 s says so).
  static TcpSocket connect(const SockAddr& address, Deadline deadline, IfRefused if_refused = IfRefused::kFail);
  /// Never waits: the next incoming connection (non-blocking, TCP_NODELAY),
  /// or an empty socket when none is waiting.
  TcpSocket try_accept(SockAddr* peer) const;
  bool valid() const { return fd_ >= 0; }

  void send_all(const void* data, size_t length, Deadline deadline, const std::string& peer) const;
  void recv_all(void* data, size_t length, Deadline deadline, const std::string& peer) const;
  /// Length-prefixed messages (at most 16 MiB; a receiver may cap them lower).
  void send_message(std::span<const uint8_t> message, Deadline deadline, const std::string& peer) const;
  std::vector<uint8_t> recv_message(Deadline deadline, const std::string& peer, size_t max_bytes = kMaxMessage) const;
  static constexpr size_t kMaxMessage = 16u << 20;

  /// Whether data (or EOF) is waiting, within `timeout_ms` (0: just look).
  bool readable(int timeout_ms) const;
  /// Kernel keepalive probes on KeepaliveSchedule::of(silence), so a peer
  /// whose host vanished, which sends no FIN, shows as closed about `silence`
  /// after the last traffic; 0: off.
  void keep_alive(std::chrono::milliseconds silence) const;
  SockAddr local_address() const;
  int fd() const { return fd_; }

 private:
  void wait_ready(short events, Deadline deadline, const char* what, const std::string& peer) const;
  void send_parts(std::span<iovec> parts, Deadline deadline, const std::string& peer) const;
  int fd_ = -1;
};

/// Assembles one length-prefixed message from a socket without ever waiting:
/// bytes are taken as they arrive and the buffer grows with them, so a peer
/// that announces a large message and sends little costs little, and a slow
/// one holds up nobody who polls it.
class MessageReader {
 public:
  /// Reads what has arrived (never more than this message); true once it is
  /// complete (see take()). Throws Error(kPeerGone) on EOF, Error(kProtocol)
  /// when the announced length is over `max_bytes`.
  bool poll(const TcpSocket& socket, const std::string& peer, size_t max_bytes);
  /// The complete message; the reader starts over.
  std::vector<uint8_t> take();
  /// Memory it holds for the message so far: what arrived, not what was announced.
  size_t held_bytes() const { return body_.capacity(); }

 private:
  uint8_t head_[4] = {};
  size_t head_have_ = 0;
  std::vector<uint8_t> body_;
  size_t body_want_ = 0;
};

/// Sends length-prefixed messages without ever waiting: what the socket does
/// not take now waits here for the next flush(), so a peer that never reads
/// holds up nobody who serves others on the same thread.
class MessageWriter {
 public:
  /// Adds one message (at most TcpSocket::kMaxMessage bytes) behind what is still unsent.
  void queue(std::span<const uint8_t> message);
  /// Sends what the socket takes now; true once nothing is left. Throws
  /// Error(kPeerGone) when the peer is gone.
  bool flush(const TcpSocket& socket, const std::string& peer);
  bool empty() const { return sent_ == bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
  size_t sent_ = 0;
};

}  // namespace rdmaps::transport
