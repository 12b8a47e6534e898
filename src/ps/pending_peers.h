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
  /// Writes a line about a refused peer; past 10 lines a second, counts them
  /// instead and says how many once the second is over (a flood must not flood the log).
  void log(const std::string& line);

  struct Waiting {
    std::unique_ptr<transport::Endpoint> ep;
    std::chrono::steady_clock::time_point deadline;
  };
  std::string who_;
  std::chrono::milliseconds timeout_;
  size_t max_message_;
  std::vector<Waiting> waiting_;
  std::chrono::steady_clock::time_point log_window_{};
  uint32_t logged_ = 0;
  uint64_t unlogged_ = 0;
};

/// Most peers that may wait for their first message at once (per listener);
/// a new one makes the oldest go.
constexpr size_t kMaxPendingPeers = 256;

}  // namespace rdmaps::ps
