// An HTTP endpoint that serves GET /metrics (the Prometheus text format) on
// its own thread. Each scrape calls `render`, which must be thread-safe and
// must not wait on the caller's hot path (a snapshot, as Server::stats()
// takes). It stops and joins its thread in the destructor.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <thread>

#include "transport/tcp_socket.h"
#include "transport/unique_fd.h"

namespace rdmaps::metrics {

class HttpEndpoint {
 public:
  /// Listens at `address` ("HOST:PORT", port 0 picks a free one) or throws
  /// Error(kInvalidArgument) naming `flag` and the address: malformed, a host
  /// that is not an address of this machine, or a port in use.
  HttpEndpoint(const std::string& address, const std::string& flag, std::function<std::string()> render);
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  /// Connections held at once, at most (one more for the moment a newcomer
  /// replaces one that had its turn: see http_endpoint.cc).
  static constexpr size_t kMaxConnections = 10;

  /// host:port as bound (the real port when asked for 0).
  std::string address() const { return address_; }

 private:
  // The eventfd that tells the loop to stop, closed with the endpoint.
  void serve();

  std::function<std::string()> render_;
  transport::TcpSocket listener_;
  transport::UniqueFd wake_;  // an eventfd: written to stop serve()
  std::string address_;
  std::thread thread_;
};

}  // namespace rdmaps::metrics
