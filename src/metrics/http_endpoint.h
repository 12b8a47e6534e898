// An HTTP endpoint that serves GET /metrics (the Prometheus text format) on
// its own thread, through cpp-httplib. Each scrape calls `render`, which must
// be thread-safe and must not wait on the caller's hot path (a snapshot, as
// Server::stats() takes). It stops and joins its thread in the destructor.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace rdmaps::metrics {

class HttpEndpoint {
 public:
  /// Listens at `address` ("HOST:PORT", port 0 picks a free one) or throws
  /// Error(kInvalidArgument) naming `flag` and the address: malformed, a host
  /// that is not an IP address, or a port in use.
  HttpEndpoint(const std::string& address, const std::string& flag, std::function<std::string()> render);
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  /// Connections accepted and waiting for a serving thread, at most; more
  /// wait in the kernel's backlog.
  static constexpr size_t kMaxQueued = 8;

  /// host:port as bound (the real port when asked for 0).
  std::string address() const { return address_; }

 private:
  std::unique_ptr<httplib::Server> http_;
  std::string address_;
  std::atomic<bool> ended_{false};  // the serving loop returned
  std::thread thread_;
};

}  // namespace rdmaps::metrics
