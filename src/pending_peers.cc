#include "src/pending_peers.h"

#include <cstdio>

#include "rdmaps/error.h"

namespace rdmaps::ps {

using Clock = std::chrono::steady_clock;

PendingPeers::PendingPeers(std::string who, std::chrono::milliseconds timeout, size_t max_message)
    : who_(std::move(who)), timeout_(timeout), max_message_(max_message) {}

bool PendingPeers::poll(transport::Listener& listener, const OnMessage& on_message) {
  bool any = false;
  while (waiting_.size() < kMaxPendingPeers) {
    std::unique_ptr<transport::Endpoint> ep;
    try {
      ep = listener.poll();
    } catch (const std::exception& e) {  // that peer is gone; the others go on
      std::fprintf(stderr, "%s: refused a connection: %s\n", who_.c_str(), e.what());
      any = true;
      continue;
    }
    if (!ep) break;
    waiting_.push_back({std::move(ep), Clock::now() + timeout_});
    any = true;
  }
  const auto now = Clock::now();
  for (size_t i = 0; i < waiting_.size();) {
    Waiting& w = waiting_[i];
    std::optional<std::vector<uint8_t>> message;
    std::string why;
    try {
      message = w.ep->try_recv_control(max_message_);
      if (!message && now >= w.deadline)
        why = "sent no complete first message within " + std::to_string(timeout_.count()) + " ms";
    } catch (const std::exception& e) {
      why = e.what();
    }
    if (!message && why.empty()) {
      ++i;
      continue;
    }
    std::unique_ptr<transport::Endpoint> ep = std::move(w.ep);
    waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
    any = true;
    if (!why.empty()) {
      std::fprintf(stderr, "%s: closed the connection from %s: %s\n", who_.c_str(), ep->peer_name().c_str(),
                   why.c_str());
      continue;
    }
    on_message(std::move(ep), std::move(*message));
  }
  return any;
}

}  // namespace rdmaps::ps
