// Endpoints whose peer is leaving: each is closed once the peer closed its
// side (both closing at once leaves neither to acknowledge the other), or 5 s
// on. Closes never wait here: the context drives them all together
// (transport::Context::finish_closes), so a stopped peer holds no thread.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "transport/context.h"

namespace rdmaps::ps {

class ClosingEndpoints {
 public:
  using Clock = std::chrono::steady_clock;

  /// `keep`: memory the peer may put into, passed on to the close
  /// (Endpoint::close_later decides how long it stays).
  void add(std::unique_ptr<transport::Endpoint> ep, std::shared_ptr<void> keep = nullptr) {
    closing_.push_back({std::move(ep), std::move(keep), Clock::now()});
  }
  /// Closes those whose peer closed, failed, or had 5 s.
  void sweep();
  /// The server is leaving: closes every one now and waits for no peer's
  /// acknowledgement (see the definition).
  void close_all(transport::Context& context);
  bool empty() const { return closing_.empty(); }

 private:
  struct Closing {
    std::unique_ptr<transport::Endpoint> ep;
    std::shared_ptr<void> keep;
    Clock::time_point since;
  };
  std::vector<Closing> closing_;
};

}  // namespace rdmaps::ps
