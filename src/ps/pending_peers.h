// Peers that passed the transport's handshake and owe their first control
// message (a Hello or a LaneHello). Polled without waiting, each with a
// deadline and a bound on how many wait at once, so a silent, slow or hostile
// peer holds up neither admission nor the data path (docs/security.md).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "src/ps/refusal_log.h"
#include "transport/context.h"

namespace rdmaps::ps {

class PendingPeers {
 public:
  using OnMessage = std::function<void(std::unique_ptr<transport::Endpoint>, std::vector<uint8_t>)>;
  /// `who` prefixes log lines ("rdmaps-server", "rdmaps-server: lane 2").
  PendingPeers(std::string who, std::chrono::milliseconds timeout, size_t max_message);

  /// Takes in peers whose handshake completed and hands each first message to
  /// `on_message`; logs and closes peers that fail or run out of time. Never
  /// waits; true if anything happened.
  bool poll(transport::Listener& listener, const OnMessage& on_message);
  size_t size() const { return waiting_.size(); }

 private:
  /// Hands `ep`'s first message to `on_message` if it came, or closes `ep`
  /// saying why (its failure, else `if_silent` where that is not empty);
  /// false, `ep` kept, while it may still come.
  bool settle(std::unique_ptr<transport::Endpoint>& ep, const std::string& if_silent, const OnMessage& on_message);

  struct Waiting {
    std::unique_ptr<transport::Endpoint> ep;
    std::chrono::steady_clock::time_point deadline;
  };
  RefusalLog log_;
  std::chrono::milliseconds timeout_;
  size_t max_message_;
  std::vector<Waiting> waiting_;
};

/// Most peers that may wait for their first message at once (per listener);
/// a new one makes the oldest go.
constexpr size_t kMaxPendingPeers = 256;

}  // namespace rdmaps::ps
