#include "src/ps/pending_peers.h"

#include <cstdio>
#include <optional>

#include "rdmaps/error.h"
#include "rdmaps/log.h"

namespace rdmaps::ps {

using Clock = std::chrono::steady_clock;

PendingPeers::PendingPeers(std::string who, std::chrono::milliseconds timeout, size_t max_message)
    : log_(std::move(who)), timeout_(timeout), max_message_(max_message) {}

bool PendingPeers::poll(transport::Listener& listener, const OnMessage& on_message) {
  log_.flush();
  bool any = false;
  // A bounded number of tries a round: each failed one (a handshake dropped,
  // room made in a full listener) is tried again at once, and a flood of
  // connections that fail kept the caller (a lane) here for as long as it lasted.
  for (size_t tries = 0; tries < 2 * kMaxPendingPeers; ++tries) {
    std::unique_ptr<transport::Endpoint> ep;
    try {
      ep = listener.poll();
    } catch (const Error& e) {
      log_.warn(std::string("refused a connection: ") + e.what());
      // An accept that fails (out of files) fails again at once: try again on
      // the next round instead of spinning here. Any other failure is that
      // peer's; the others go on.
      if (e.code() == Errc::kIo) break;
      any = true;
      continue;
    } catch (const std::exception& e) {
      log_.warn(std::string("refused a connection: ") + e.what());
      any = true;
      continue;
    }
    if (!ep) break;
    // Full: the peer waiting longest makes room (they wait in arrival order),
    // its message handed on if it came meanwhile (a round takes in up to
    // 512 peers before it reads any). The listener stopped being polled
    // instead, so that 256 silent peers held up every handshake, an honest
    // worker's until it expired.
    if (waiting_.size() >= kMaxPendingPeers) {
      settle(waiting_.front().ep,
             "silent the longest of " + std::to_string(kMaxPendingPeers) +
                 " peers owing their first message (the most that wait)",
             on_message);
      waiting_.erase(waiting_.begin());
    }
    waiting_.push_back({std::move(ep), Clock::now() + timeout_});
    any = true;
  }
  const auto now = Clock::now();
  for (size_t i = 0; i < waiting_.size();) {
    const std::string late = now >= waiting_[i].deadline
                                 ? "sent no complete first message within " + std::to_string(timeout_.count()) + " ms"
                                 : "";
    if (!settle(waiting_[i].ep, late, on_message)) {
      ++i;
      continue;
    }
    waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
    any = true;
  }
  return any;
}

bool PendingPeers::settle(std::unique_ptr<transport::Endpoint>& ep, const std::string& if_silent,
                          const OnMessage& on_message) {
  std::optional<std::vector<uint8_t>> message;
  std::string why = if_silent;
  try {
    message = ep->try_recv_control(max_message_);
  } catch (const std::exception& e) {
    why = e.what();
  }
  if (message) {
    on_message(std::move(ep), std::move(*message));
    return true;
  }
  if (why.empty()) return false;
  log_.warn("closed the connection from " + ep->peer_name() + ": " + why);
  ep.reset();
  return true;
}

}  // namespace rdmaps::ps
