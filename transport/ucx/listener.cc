#include "transport/ucx/listener.h"

#include "transport/ucx/context.h"
#include "transport/ucx/endpoint.h"

namespace rdmaps::transport::ucx {

UcxListener::UcxListener(UcxContext& context, const SockAddr& address)
    : context_(context), socket_(TcpSocket::listen(address)), address_(socket_.local_address()) {}

std::unique_ptr<Endpoint> UcxListener::accept(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  SockAddr peer;
  TcpSocket socket;
  try {
    socket = socket_.accept(deadline, &peer);
  } catch (const Error& e) {
    if (e.code() != Errc::kTimeout) throw;
    throw Error(Errc::kTimeout, "no peer connected to " + address_.to_string() + " within " +
                                    std::to_string(timeout.count()) + " ms (waiting for a client to connect)");
  }
  return UcxEndpoint::create(context_, std::move(socket), peer.to_string(), false, deadline);
}

}  // namespace rdmaps::transport::ucx
