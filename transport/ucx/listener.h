// Listener: a TCP bootstrap socket; accept() runs the handshake and creates
// the UCX endpoint from the peer's worker address.
#pragma once

#include "transport/context.h"
#include "transport/tcp_socket.h"

namespace rdmaps::transport::ucx {

class UcxContext;

class UcxListener final : public Listener {
 public:
  UcxListener(UcxContext& context, const SockAddr& address);
  const SockAddr& address() const override { return address_; }
  bool has_pending() const override { return socket_.readable(0); }
  std::unique_ptr<Endpoint> accept(std::chrono::milliseconds timeout) override;

 private:
  UcxContext& context_;
  TcpSocket socket_;
  SockAddr address_;
};

}  // namespace rdmaps::transport::ucx
