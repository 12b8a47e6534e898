// A loopback port free a moment ago, for something that must be told its
// port before it listens (a rendezvous host at MASTER_PORT).
#pragma once

#include <cstdint>

#include "transport/address.h"
#include "transport/tcp_socket.h"

namespace rdmaps::test {

inline uint16_t free_port() {
  auto s = transport::TcpSocket::listen(transport::SockAddr::parse("127.0.0.1:0"));
  return static_cast<uint16_t>(s.local_address().port());
}

}  // namespace rdmaps::test
