// A plain HTTP client for tests of the /metrics endpoints: blocking sockets
// on loopback, every reply waited for at most 5 s.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>

namespace rdmaps::test {

// A blocking client socket connected to `port` on loopback; replies wait at most 5 s.
inline int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return -1;
  timeval five{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &five, sizeof(five));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &five, sizeof(five));
  return fd;
}

// Everything the endpoint sends until it closes (or 5 s pass).
inline std::string read_reply(int fd) {
  std::string reply;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) return reply;
    reply.append(buffer, static_cast<size_t>(n));
  }
}

inline std::string exchange(int port, const std::string& request) {
  const int fd = connect_to(port);
  if (fd < 0) return "connect failed";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string reply = read_reply(fd);
  ::close(fd);
  return reply;
}

/// The body of GET /metrics from `address` (HOST:PORT on loopback), "" when none came.
inline std::string scrape(const std::string& address) {
  const std::string reply =
      exchange(std::stoi(address.substr(address.rfind(':') + 1)), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  const size_t end = reply.find("\r\n\r\n");
  return end == std::string::npos ? "" : reply.substr(end + 4);
}

}  // namespace rdmaps::test
