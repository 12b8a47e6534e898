// The bootstrap connection: a TCP socket that carries the handshake (worker
// addresses, versions) and set-up control messages, every wait bounded.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "transport/address.h"

namespace rdmaps::transport {

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
  static TcpSocket listen(const SockAddr& address);
  /// Connects within the deadline; ECONNREFUSED etc. become Error(kUnreachable).
  static TcpSocket connect(const SockAddr& address, Deadline deadline);
  /// Next incoming connection; Error(kTimeout) when none arrives in time.
  TcpSocket accept(Deadline deadline, SockAddr* peer) const;

  void send_all(const void* data, size_t length, Deadline deadline, const std::string& peer) const;
  void recv_all(void* data, size_t length, Deadline deadline, const std::string& peer) const;
  /// Length-prefixed messages (at most 16 MiB).
  void send_message(std::span<const uint8_t> message, Deadline deadline, const std::string& peer) const;
  std::vector<uint8_t> recv_message(Deadline deadline, const std::string& peer) const;

  /// Whether data (or EOF) is waiting, within `timeout_ms` (0: just look).
  bool readable(int timeout_ms) const;
  SockAddr local_address() const;
  int fd() const { return fd_; }

 private:
  void wait_ready(short events, Deadline deadline, const char* what, const std::string& peer) const;
  int fd_ = -1;
};

}  // namespace rdmaps::transport
