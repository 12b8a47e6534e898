#include "transport/ucx/listener.h"

#include <poll.h>

#include <algorithm>
#include <string_view>
#include <unordered_map>

#include "rdmaps/error.h"
#include "transport/ucx/context.h"
#include "transport/ucx/endpoint.h"

namespace rdmaps::transport::ucx {

using Clock = std::chrono::steady_clock;

UcxListener::UcxListener(UcxContext& context, const SockAddr& address)
    : context_(context), socket_(TcpSocket::listen(address)), address_(socket_.local_address()) {}

std::optional<Error> UcxListener::take_in_connections() {
  const ContextOptions& o = context_.options();
  SockAddr peer;
  std::optional<Error> said;
  // A table's worth per call at most: a flood as fast as accept() drains
  // kept every pending handshake from advancing.
  for (size_t taken = 0; taken < o.max_pending_handshakes; ++taken) {
    TcpSocket s;
    try {
      s = socket_.try_accept(&peer);
    } catch (const Error& e) {
      return e;
    }
    if (!s.valid()) break;
    pending_.emplace_back(std::move(s), peer.to_string(), o.secret, Clock::now() + o.handshake_timeout);
    if (pending_.size() > o.max_pending_handshakes) {
      // Full: the host holding the most pending handshakes makes room, so a
      // flood from one host costs that host, not another's honest peer (a
      // flood of valid openings pushed one out mid-handshake). Of its
      // handshakes before the newcomer, the oldest that has not even opened
      // makes room, so that a flood of silent connections does not drop an
      // honest peer of the same host mid-handshake (it did once 256 came
      // behind it); else the oldest. Never the newcomer itself: it cannot
      // have opened yet, and a table of openings that went silent (an
      // opening needs no secret) turned every honest peer away on arrival.
      const auto newcomer = std::prev(pending_.end());
      const auto host_of = [](const bootstrap::ServerHandshake& h) {
        return std::string_view(h.peer()).substr(0, h.peer().rfind(':'));
      };
      std::unordered_map<std::string_view, size_t> held;
      size_t most = 0;
      for (const auto& h : pending_) most = std::max(most, ++held[host_of(h)]);
      const auto of_the_most = [&](const bootstrap::ServerHandshake& h) { return held[host_of(h)] == most; };
      auto victim = std::find_if(pending_.begin(), newcomer,
                                 [&](const bootstrap::ServerHandshake& h) { return of_the_most(h) && !h.opened(); });
      const bool silent = victim != newcomer;
      if (!silent) victim = std::find_if(pending_.begin(), newcomer, of_the_most);
      said = Error(Errc::kTimeout, "peer " + victim->peer() + " was dropped before it completed the handshake: " +
                                       std::to_string(o.max_pending_handshakes) + " handshakes were pending, " +
                                       std::to_string(most) + " of them from " + std::string(host_of(*victim)) +
                                       ", whose " + (silent ? "oldest that had not begun" : "oldest") + " makes room");
      pending_.erase(victim);
    }
  }
  return said;
}

std::unique_ptr<Endpoint> UcxListener::poll() {
  // Out of files, the handshakes still advance and expire: thrown first, the
  // accept's failure stopped them for good, and their descriptors with them.
  const std::optional<Error> accept_failed = take_in_connections();
  std::vector<pollfd> fds(pending_.size());
  for (size_t i = 0; i < pending_.size(); ++i) fds[i] = {pending_[i].fd(), POLLIN, 0};
  if (!fds.empty()) ::poll(fds.data(), fds.size(), 0);
  const auto now = Clock::now();
  for (size_t i = 0; i < pending_.size(); ++i) {
    bootstrap::ServerHandshake& h = pending_[i];
    const bool due = fds[i].revents || h.ready();
    // Late whether or not bytes came: a peer sending one byte per poll held
    // its slot for as long as its largest message took.
    const bool late = now >= h.deadline();
    if (!due && !late) continue;
    const auto drop = [&] { pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i)); };
    bool ready = false;
    if (due) {
      try {
        ready = h.advance();
      } catch (...) {  // that peer is gone; the others stay
        drop();
        throw;
      }
    }
    if (!ready) {
      if (!late) continue;
      const std::string peer = h.peer();
      drop();
      throw Error(Errc::kTimeout, "peer " + peer + " did not complete the handshake within " +
                                      std::to_string(context_.options().handshake_timeout.count()) +
                                      " ms (connection closed)");
    }
    bootstrap::ServerHandshake done = std::move(h);
    drop();
    return finish(done);
  }
  if (accept_failed) throw *accept_failed;
  return nullptr;
}

// The peer proved the secret: only now does its address reach UCX.
std::unique_ptr<Endpoint> UcxListener::finish(bootstrap::ServerHandshake& handshake) {
  std::unique_ptr<UcxEndpoint> ep;
  try {
    ep = UcxEndpoint::create(context_, handshake.peer(), handshake.client_address());
  } catch (const Error& e) {
    handshake.refuse(e.code(), e.what());
    throw;
  }
  TcpSocket socket = handshake.accept(context_.worker_address());
  ep->adopt_socket(std::move(socket), handshake.seal());
  return ep;
}

std::unique_ptr<Endpoint> UcxListener::accept(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto ep = poll()) return ep;
    const auto now = Clock::now();
    if (now >= deadline)
      throw Error(Errc::kTimeout, "no peer connected to " + address_.to_string() + " within " +
                                      std::to_string(timeout.count()) + " ms (waiting for a client to connect)");
    std::vector<pollfd> fds{{socket_.fd(), POLLIN, 0}};
    for (const auto& h : pending_) fds.push_back({h.fd(), POLLIN, 0});
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    ::poll(fds.data(), fds.size(), static_cast<int>(std::min<int64_t>(left + 1, 10)));
  }
}

}  // namespace rdmaps::transport::ucx
