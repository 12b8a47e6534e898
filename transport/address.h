// IP socket address of a listener or peer: "host:port", IPv4 or IPv6.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace rdmaps::transport {

class SockAddr {
 public:
  SockAddr() = default;
  /// Parses "host:port", "[v6]:port" or ":port" (any address); resolves names.
  /// Throws Error(kInvalidArgument) naming the text when it cannot.
  static SockAddr parse(std::string_view text);
  static SockAddr from(const sockaddr* addr, socklen_t length);

  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t length() const { return length_; }
  int port() const;
  /// The same host at another port.
  SockAddr with_port(uint16_t port) const;
  std::string to_string() const;
  /// Whether only this host can reach it (127.0.0.0/8, ::1).
  bool is_loopback() const;
  /// Whether it is every interface of the host (0.0.0.0, ::).
  bool is_any() const;

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

/// "host:port", "[v6]:port" or ":port" checked without resolving the host:
/// the host without brackets and the port. Throws Error(kInvalidArgument)
/// naming the text when the form is wrong (a blank, an unbracketed IPv6
/// host, a port outside 0..65535).
struct HostPort {
  std::string host;
  uint16_t port = 0;
};
HostPort split_host_port(std::string_view text);
/// The host of "host:port" or "[v6]:port", without brackets.
std::string host_of(std::string_view host_port);
/// "host:port", an IPv6 literal host in brackets ("[::1]:13337").
std::string join_host_port(const std::string& host, uint16_t port);
/// Whether `text` names `host_port` as an address, not as the start of
/// another's ("h:4000" is not named by "h:40001").
bool names_address(std::string_view text, std::string_view host_port);

}  // namespace rdmaps::transport
