// Listener: a TCP bootstrap socket whose peers' handshakes (bootstrap.h) run
// side by side, each advanced as its bytes arrive; a UCX endpoint is created
// only from an authenticated peer's address.
#pragma once

#include <optional>
#include <vector>

#include "transport/bootstrap.h"
#include "transport/context.h"
#include "transport/tcp_socket.h"

namespace rdmaps::transport::ucx {

class UcxContext;

class UcxListener final : public Listener {
 public:
  UcxListener(UcxContext& context, const SockAddr& address);
  const SockAddr& address() const override { return address_; }
  std::unique_ptr<Endpoint> poll() override;
  std::unique_ptr<Endpoint> accept(std::chrono::milliseconds timeout) override;

 private:
  /// Accepts what the kernel queued; an accept that failed (out of files) is
  /// returned, for poll() to throw once the pending handshakes had their turn.
  std::optional<Error> take_in_connections();
  std::unique_ptr<Endpoint> finish(bootstrap::ServerHandshake& handshake);

  UcxContext& context_;
  TcpSocket socket_;
  SockAddr address_;
  std::vector<bootstrap::ServerHandshake> pending_;
};

}  // namespace rdmaps::transport::ucx
